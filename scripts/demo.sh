#!/usr/bin/env bash
# One command: set up, then run the whole pipeline on the bundled PCB images.
# Extra arguments go to `edge-inspect demo` (e.g. --frames 1000, --engine openvino).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- --frames 300 --summary-json demo-out/summary.json
fi
exec .venv/bin/edge-inspect demo "$@"
