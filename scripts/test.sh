#!/usr/bin/env bash
# Sets up (scripts/setup.sh test) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q -rs "$@"
