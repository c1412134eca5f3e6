#!/usr/bin/env bash
# Installs what the tests need (once) and runs them on CPU, offline. Arguments go to pytest: test paths narrow
# the run (`scripts/test.sh tests/interop`); without one pytest runs the whole `tests` folder (pytest.ini's
# testpaths: pytest itself tells paths from option values such as `-m "not slow"` or `-k EXPR`).
# FLANX_SKIP_SETUP=1 uses the environment at $FLANX_VENV (default .venv) as it is, installing nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FLANX_VENV:-.venv}"
[ "${FLANX_SKIP_SETUP:-0}" = 1 ] || scripts/setup_env.sh test
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$venv/bin/python" -m pytest "$@"
