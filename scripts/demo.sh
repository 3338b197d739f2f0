#!/usr/bin/env bash
# Fresh machine -> trained MixVI on the shipped Kang IFN-b PBMC data:
# writes mixvi_demo_out/kang_mixvi.h5ad (embedding + clusters), a UMAP PNG and metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
mixvi demo --out mixvi_demo_out "$@"
