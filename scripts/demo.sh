#!/usr/bin/env bash
# Set up .venv (first time only) and run the built-in demo: synthetic data -> training -> report -> predictions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/clipwise demo "$@"
