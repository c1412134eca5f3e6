#!/usr/bin/env bash
# Creates (once) the project's virtual environment in .venv and installs flanx with the given extras.
# Idempotent: re-installs only when setup.py or constraints.txt changed. Usage: scripts/setup_env.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
venv="${FLANX_VENV:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.flanx-installed-$extras"
digest=$(cat setup.py constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c constraints.txt --config-settings editable_mode=compat -e ".[$extras]"
  echo "$digest" > "$stamp"
fi
