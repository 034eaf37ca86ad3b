#!/usr/bin/env bash
# Sets up (scripts/setup.sh test), lints (ruff, rules in pyproject.toml) and runs the whole
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -q -rs "$@"
