#!/usr/bin/env bash
# Installs what the tests need (once) and runs them on CPU, offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh test
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest tests "$@"
