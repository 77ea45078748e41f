#!/usr/bin/env bash
# Create ./.venv and install candlewax with its dev tools (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "candlewax needs Python >= 3.11 (found $("$PY" --version))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.candlewax-installed
# Reinstall when the package definition or the native book's sources changed (an
# editable install builds the Rust extension in place, operators/_book_native*.so).
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
  || [ -n "$(find native/Cargo.toml native/Cargo.lock native/src -newer "$stamp" 2>/dev/null)" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
