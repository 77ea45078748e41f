#!/usr/bin/env bash
# Set up and run the demo: the real pipeline over recorded Binance + OKX traffic
# served by the embedded exchange simulator over real WebSockets.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/candlewax demo "$@"
