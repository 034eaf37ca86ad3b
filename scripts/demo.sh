#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the demo: no webcam, GPU or display needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
exec .venv/bin/python main.py demo "$@"
