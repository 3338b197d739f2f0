#!/usr/bin/env bash
# Fresh machine -> the default (fast) test suite. Slow trainings/benchmarks: add `-m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
python -m pytest "$@"
