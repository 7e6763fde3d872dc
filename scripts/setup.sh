#!/usr/bin/env bash
# Set up everything edge-inspect needs on a fresh Debian/Ubuntu machine: system packages
# (only when missing), a virtual environment in .venv and the project with its CPU engines
# and dev tools. Safe to run again: it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=()
command -v "$PY" >/dev/null 2>&1 || need_apt+=(python3)
if command -v "$PY" >/dev/null 2>&1; then
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
    echo "edge-inspect needs Python >= 3.10 (found $("$PY" --version 2>&1))" >&2; exit 1; }
  "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
fi
# Real peers the demo and the tests talk to over loopback: a broker, a headless browser,
# and the linters for the station's scripts (skip with EDGE_NO_SYSTEM_DEPS=1).
if [ "${EDGE_NO_SYSTEM_DEPS:-0}" != 1 ]; then
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

EXTRAS=${EDGE_EXTRAS:-cpu,dev}
stamp=.venv/.edge-inspect-installed
want="$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
echo "edge-inspect is set up in .venv ($(.venv/bin/python --version))"
