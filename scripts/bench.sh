#!/usr/bin/env bash
# Set up, then run the benchmarks; figures (JSON + PNG) land in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python benchmarks/pipeline.py "$@"
.venv/bin/python benchmarks/engines.py "$@"
