#!/usr/bin/env bash
# Install edge-inspect on a Jetson (JetPack 6, Ubuntu 22.04, Python 3.10) as a systemd service.
# TensorRT and CUDA come from JetPack (python3-libnvinfer); the venv sees them through
# --system-site-packages. No torch is installed.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${DEST:-/opt/edge-inspect}
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev python3-libnvinfer cuda-nvcc-12-6 || \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev
id edge-inspect >/dev/null 2>&1 || useradd --system --home "$DEST" --groups video edge-inspect
mkdir -p "$DEST" /etc/edge-inspect /var/lib/edge-inspect
rsync -a --delete --exclude .venv --exclude build "$SRC/" "$DEST/"
python3 -m venv --system-site-packages "$DEST/.venv"
"$DEST/.venv/bin/pip" install -q --upgrade pip
"$DEST/.venv/bin/pip" install -q -e "$DEST[cpu]"
"$DEST/.venv/bin/pip" install -q pycuda || echo "pycuda did not build: the tensorrt engine needs it (CUDA toolkit headers)"
[ -f /etc/edge-inspect/station.yaml ] || cp "$SRC/deploy/jetson/station.example.yaml" /etc/edge-inspect/station.yaml
chown -R edge-inspect:edge-inspect "$DEST" /var/lib/edge-inspect
install -m 0644 "$SRC/deploy/jetson/edge-inspect.service" /etc/systemd/system/edge-inspect.service
"$DEST/.venv/bin/edge-inspect" config check /etc/edge-inspect/station.yaml
systemctl daemon-reload
systemctl enable --now edge-inspect
echo "edge-inspect installed; logs: journalctl -u edge-inspect -f"
