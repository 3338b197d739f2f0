#!/usr/bin/env bash
# Create ./.venv with mixvi and its tested dependency versions (constraints.txt).
# torch is installed first at a pinned CPU-friendly version so pip does not pull a
# multi-GB CUDA build; pyproject.toml keeps a normal range for real users.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -c constraints.txt -e ".[test${MIXVI_EXTRAS:+,$MIXVI_EXTRAS}]"
python -c "import mixvi, scvi, torch; print('mixvi', mixvi.__version__, '| scvi-tools', scvi.__version__, '| torch', torch.__version__)"
