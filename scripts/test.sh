#!/usr/bin/env bash
# Set up and run the checks and the test suite: ruff, mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Where cargo exists the native book must have been built: its tests then fail
# instead of skipping, so a broken build cannot hide behind the Python fallback.
if command -v cargo >/dev/null; then export CANDLEWAX_REQUIRE_NATIVE=1; fi
.venv/bin/pytest "$@"
