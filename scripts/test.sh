#!/usr/bin/env bash
# One command: set up, then lint (ruff), type-check (mypy) and run the default test suite.
# Opt-in suites: `scripts/test.sh -m slow`, `-m parity` (needs the train extra), `-m gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
