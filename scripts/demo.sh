#!/usr/bin/env bash
# Installs flanx (once) and runs the main job: the end-to-end demo on the embedded default dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh hf
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" TF_CPP_MIN_LOG_LEVEL=3 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${FLANX_VENV:-.venv}/bin/python" -m flanx.demo "$@"
