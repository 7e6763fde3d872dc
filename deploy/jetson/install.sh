#!/usr/bin/env bash
# Install edge-inspect on a Jetson (JetPack 6: L4T r36, Ubuntu 22.04, Python 3.10) as a systemd
# service. Also works on an x86 Ubuntu host (CPU engines, or TensorRT where installed).
#
#   sudo deploy/jetson/install.sh --dry-run          # print every step, change nothing
#   sudo deploy/jetson/install.sh                    # install / update (safe to run again)
#   sudo deploy/jetson/install.sh --gige-nic eth1 --clocks
#
# What it does, each step only when something is missing or changed (idempotent):
#   apt packages (python3-venv, TensorRT's python3-libnvinfer on Jetson), the edge-inspect system
#   user, the code in /opt/edge-inspect with a venv that sees JetPack's TensorRT and CUDA Python
#   bindings (--system-site-packages; no torch), /etc/edge-inspect/station.yaml (never
#   overwritten), the systemd unit (Type=notify, watchdog, hardening), journald and logrotate
#   limits, GigE Vision host settings (socket receive buffers; MTU 9000 on --gige-nic), the Jetson
#   power mode unit (--clocks), then config check + doctor, and start or restart the service.
#
# --prefix DIR writes every file under DIR instead of / and only prints the steps that change the
# running system (apt, users, systemctl, sysctl, ip/nmcli): what the tests run.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$SRC/deploy/jetson"
PREFIX=""
DRY_RUN=0
GIGE_NIC=""
CLOCKS=0
START=1
EXTRAS="cpu"
SKIP=","
SERVICE_USER="edge-inspect"

usage() {
  cat <<EOF
usage: $(basename "$0") [--dry-run] [--prefix DIR] [--gige-nic NIC] [--clocks] [--no-start]
                  [--extras LIST] [--skip STEP[,STEP...]]
  --dry-run        print every step (commands and files), change nothing
  --prefix DIR     install files under DIR (a test root); system commands are printed, not run
  --gige-nic NIC   the NIC the GigE cameras are on: MTU 9000 (NetworkManager, else a udev rule)
  --clocks         install + enable edge-inspect-clocks.service (nvpmodel + jetson_clocks)
  --no-start       install, but do not enable/start the service
  --extras LIST    pip extras to install (default: cpu)
  --skip STEPS     skip steps: apt, user, code, venv, config, units, logs, gige, clocks, check, service
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift ;;
    --prefix=*) PREFIX=${1#*=} ;;
    --gige-nic) GIGE_NIC=${2:?--gige-nic needs an interface name}; shift ;;
    --gige-nic=*) GIGE_NIC=${1#*=} ;;
    --clocks) CLOCKS=1 ;;
    --no-start) START=0 ;;
    --extras) EXTRAS=${2:?--extras needs a list}; shift ;;
    --skip) SKIP=",${2:?--skip needs step names},"; shift ;;
    --skip=*) SKIP=",${1#*=}," ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$PREFIX" ]; then
  mkdir -p "$PREFIX"
  PREFIX=$(cd "$PREFIX" && pwd)
fi

OPT="$PREFIX/opt/edge-inspect"
ETC="$PREFIX/etc/edge-inspect"
STATE="$PREFIX/var/lib/edge-inspect"
UNIT_DIR="$PREFIX/etc/systemd/system"
VENV="$OPT/.venv"
CHANGED=0   # files or code changed: restart a running service

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
skipped() { case "$SKIP" in *",$1,"*) note "skipped (--skip $1)"; return 0 ;; esac; return 1; }

# run CMD...: a command that changes this machine's files (honours --dry-run)
run() {
  printf '  + %s\n' "$*"
  [ "$DRY_RUN" = 1 ] || "$@"
}

# sys CMD...: a command that changes the running system (also only printed with --prefix)
sys() {
  if [ -n "$PREFIX" ]; then
    printf '  + %s   (not run: --prefix)\n' "$*"
    return 0
  fi
  run "$@"
}

# put MODE SRC DEST: install a file only when it differs (keeps mtimes stable; idempotent)
put() {
  local mode=$1 src=$2 dest=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    note "unchanged: $dest"
    return 0
  fi
  run install -D -m "$mode" "$src" "$dest"
  CHANGED=1
}

# put_text MODE DEST TEXT: like put, for generated content
put_text() {
  local mode=$1 dest=$2 text=$3 tmp
  tmp=$(mktemp)
  printf '%s\n' "$text" > "$tmp"
  put "$mode" "$tmp" "$dest"
  rm -f "$tmp"
}

have() { command -v "$1" >/dev/null 2>&1; }

# -- 0. what this host is -------------------------------------------------------------------
say "host"
if [ "$DRY_RUN" = 0 ] && [ -z "$PREFIX" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo), or use --dry-run / --prefix" >&2
  exit 1
fi
JETSON=0
if [ -f /etc/nv_tegra_release ]; then
  JETSON=1
  release=$(head -n1 /etc/nv_tegra_release)
  note "Jetson: $release"
  case "$release" in
    *R36*) ;;
    *) note "WARNING: built for JetPack 6 (L4T r36); this is another release" ;;
  esac
else
  note "not a Jetson: CPU engines (TensorRT only if installed with a GPU)"
fi
# the system Python: its site packages hold JetPack's TensorRT (a pyenv/conda python would not)
PY=${PYTHON:-}
[ -z "$PY" ] && [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
[ -z "$PY" ] && PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
  note "python3 not found: the apt step installs it"
else
  note "python: $PY ($("$PY" --version 2>&1))"
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
    echo "install.sh: edge-inspect needs Python >= 3.10 (JetPack 6 ships 3.10)" >&2; exit 1; }
fi
[ "$DRY_RUN" = 1 ] && note "dry run: nothing below is changed"
[ -n "$PREFIX" ] && note "prefix: files go under $PREFIX"

# -- 1. system packages ----------------------------------------------------------------------
say "apt packages"
if ! skipped apt; then
  missing_of() {
    local p
    for p in "$@"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s\n' "$p"
    done
  }
  apt_install() {
    sys env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  }
  mapfile -t missing < <(missing_of python3 python3-venv python3-dev python3-pip)
  jetson_missing=()
  if [ "$JETSON" = 1 ]; then
    # TensorRT's Python bindings, the CUDA headers pycuda builds against (JetPack 6: CUDA 12),
    # nvpmodel and jetson_clocks: from the L4T apt repository
    mapfile -t jetson_missing < <(missing_of python3-libnvinfer python3-libnvinfer-dev nvidia-cuda-dev nvidia-l4t-tools)
  fi
  if [ ${#missing[@]} -eq 0 ] && [ ${#jetson_missing[@]} -eq 0 ]; then
    note "all present"
  else
    sys apt-get update -qq
    [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
    if [ ${#jetson_missing[@]} -gt 0 ]; then
      # without them the service still runs on the CPU engines: warn, do not stop
      apt_install "${jetson_missing[@]}" || note "WARNING: ${jetson_missing[*]} not installed (L4T apt repository?): TensorRT unavailable"
    fi
  fi
fi

# -- 2. the service user -----------------------------------------------------------------------
say "service user $SERVICE_USER"
if ! skipped user; then
  if id "$SERVICE_USER" >/dev/null 2>&1; then
    note "exists: $(id "$SERVICE_USER")"
  else
    sys useradd --system --home-dir /var/lib/edge-inspect --no-create-home \
      --shell /usr/sbin/nologin --user-group --groups video "$SERVICE_USER"
  fi
fi

# -- 3. the code and models ----------------------------------------------------------------------
# The payload: the package sources and what the service reads (no tests, no training weights).
PAYLOAD=(pyproject.toml README.md edge cameras plc models deploy)
payload_files() {  # NUL-separated, sorted, relative to $1
  # no bytecode, training weights, or run-time state a checkout may hold (sqlite journals)
  (cd "$1" && find "${PAYLOAD[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
    ! -name '*.pt' ! -name '*.ckpt' ! -path '*/state/*' ! -name '*.sqlite*' \
    -print0 2>/dev/null | sort -z)
}
payload_digest() {  # a file that vanishes while hashing (a checkout in use) is simply left out
  (cd "$1" && payload_files . | { xargs -0 -r sha256sum 2>/dev/null || true; } | sha256sum | cut -c1-16)
}
say "code in $OPT"
if ! skipped code; then
  if [ "$SRC" = "$OPT" ]; then
    note "running from $OPT itself: nothing to copy"
  else
    want=$(payload_digest "$SRC")
    have_digest=$(cat "$OPT/.payload" 2>/dev/null || true)
    if [ "$want" = "$have_digest" ]; then
      note "unchanged (payload $want)"
    else
      note "payload $want (installed: ${have_digest:-none}): ${PAYLOAD[*]}"
      [ -d "$OPT" ] || run mkdir -p "$OPT"
      for item in "${PAYLOAD[@]}"; do  # replace whole, so files removed upstream go too
        [ -e "$OPT/$item" ] && run rm -rf "${OPT:?}/$item"
      done
      printf '  + (cd %s && tar -c <payload>) | tar -x -C %s\n' "$SRC" "$OPT"
      if [ "$DRY_RUN" = 0 ]; then
        payload_files "$SRC" | tar -C "$SRC" --null --ignore-failed-read -T - -cf - | tar -C "$OPT" -xf -
        echo "$want" > "$OPT/.payload"
      fi
      CHANGED=1
    fi
  fi
fi

# -- 4. the virtual environment ------------------------------------------------------------------
say "venv $VENV (system site packages: JetPack's TensorRT and CUDA Python bindings)"
if ! skipped venv; then
  if [ -x "$VENV/bin/python" ]; then
    note "exists: $("$VENV/bin/python" --version 2>&1)"
  else
    run "${PY:-python3}" -m venv --system-site-packages "$VENV"
  fi
  stamp="$VENV/.edge-inspect-installed"
  want="$( (cat "$SRC/pyproject.toml"; echo "$EXTRAS") | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ "$CHANGED" = 0 ]; then
    note "edge-inspect[$EXTRAS] installed and unchanged"
  else
    run "$VENV/bin/python" -m pip install -q --upgrade pip
    run "$VENV/bin/python" -m pip install -q -e "${OPT}[${EXTRAS}]"
    if [ "$DRY_RUN" = 0 ]; then echo "$want" > "$stamp"; else note "would write $stamp"; fi
    CHANGED=1
  fi
  # TensorRT (apt, system site) needs pycuda in the venv; it builds against the CUDA headers
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import tensorrt' 2>/dev/null; then
    if "$VENV/bin/python" -c 'import pycuda' 2>/dev/null; then
      note "TensorRT and pycuda importable"
    else
      run env PATH="/usr/local/cuda/bin:$PATH" CPATH="/usr/local/cuda/include" \
        "$VENV/bin/python" -m pip install -q pycuda
    fi
  else
    note "TensorRT not importable here: engines run on the CPU (auto picks the fastest)"
  fi
fi

# -- 5. configuration ------------------------------------------------------------------------------
say "config in $ETC"
if ! skipped config; then
  [ -d "$ETC" ] || run mkdir -p "$ETC"
  if [ -f "$ETC/station.yaml" ]; then
    note "kept: $ETC/station.yaml (never overwritten)"
  else
    run install -m 0640 "$HERE/station.example.yaml" "$ETC/station.yaml"
  fi
  if [ -f "$ETC/env" ]; then
    note "kept: $ETC/env"
  else
    run install -m 0640 "$HERE/etc/env.example" "$ETC/env"
  fi
  sys chown -R "root:$SERVICE_USER" "$ETC"
  [ -d "$STATE" ] || run mkdir -p "$STATE"
  sys chown "$SERVICE_USER:$SERVICE_USER" "$STATE"
  sys chmod 0750 "$STATE"
fi

# -- 6. systemd units ------------------------------------------------------------------------------
say "systemd units in $UNIT_DIR"
UNITS_CHANGED=0
if ! skipped units; then
  before=$CHANGED; CHANGED=0
  put 0644 "$HERE/systemd/edge-inspect.service" "$UNIT_DIR/edge-inspect.service"
  put 0644 "$HERE/systemd/edge-inspect-clocks.service" "$UNIT_DIR/edge-inspect-clocks.service"
  UNITS_CHANGED=$CHANGED
  [ "$before" = 1 ] && CHANGED=1
  if [ "$UNITS_CHANGED" = 1 ]; then sys systemctl daemon-reload; else note "no daemon-reload needed"; fi
fi

# -- 7. logs: journald limits, logrotate --------------------------------------------------------------
say "logs: journald limits, logrotate"
if ! skipped logs; then
  before=$CHANGED; CHANGED=0
  put 0644 "$HERE/etc/journald-edge-inspect.conf" "$PREFIX/etc/systemd/journald.conf.d/60-edge-inspect.conf"
  if [ "$CHANGED" = 1 ]; then sys systemctl restart systemd-journald; fi
  put 0644 "$HERE/etc/logrotate-edge-inspect" "$PREFIX/etc/logrotate.d/edge-inspect"
  CHANGED=$before
fi

# -- 8. GigE Vision host settings ----------------------------------------------------------------------
say "GigE Vision: socket receive buffers${GIGE_NIC:+, MTU 9000 on $GIGE_NIC}"
if ! skipped gige; then
  before=$CHANGED; CHANGED=0
  sysctl_file="$PREFIX/etc/sysctl.d/60-edge-inspect-gige.conf"
  put 0644 "$HERE/etc/sysctl-edge-inspect-gige.conf" "$sysctl_file"
  if [ "$CHANGED" = 1 ]; then sys sysctl -p /etc/sysctl.d/60-edge-inspect-gige.conf; fi
  CHANGED=$before
  if [ -n "$GIGE_NIC" ]; then
    if [ -z "$PREFIX" ] && [ ! -e "/sys/class/net/$GIGE_NIC" ]; then
      echo "install.sh: --gige-nic $GIGE_NIC: no such interface (see: ip -br link)" >&2
      exit 1
    fi
    conn=""
    if have nmcli && [ -z "$PREFIX" ]; then
      conn=$(nmcli -g GENERAL.CONNECTION device show "$GIGE_NIC" 2>/dev/null || true)
    fi
    if [ -n "$conn" ]; then
      mtu=$(nmcli -g 802-3-ethernet.mtu connection show "$conn" 2>/dev/null || true)
      if [ "$mtu" = 9000 ]; then
        note "NetworkManager connection '$conn': MTU 9000 already"
      else
        sys nmcli connection modify "$conn" 802-3-ethernet.mtu 9000
        sys nmcli connection up "$conn"
      fi
    else
      # not managed by NetworkManager: a udev rule sets the MTU whenever the NIC appears
      put_text 0644 "$PREFIX/etc/udev/rules.d/71-edge-inspect-gige-mtu.rules" \
        "ACTION==\"add\", SUBSYSTEM==\"net\", KERNEL==\"$GIGE_NIC\", RUN+=\"/sbin/ip link set dev \$name mtu 9000\""
      current=$(cat "/sys/class/net/$GIGE_NIC/mtu" 2>/dev/null || echo "?")
      if [ "$current" = 9000 ]; then note "$GIGE_NIC: MTU 9000 already"; else sys ip link set dev "$GIGE_NIC" mtu 9000; fi
    fi
  else
    note "no --gige-nic: MTU left alone (edge-inspect doctor reports each NIC's MTU)"
  fi
fi

# -- 9. Jetson power mode and clocks --------------------------------------------------------------------
say "Jetson clocks"
if ! skipped clocks; then
  if [ "$CLOCKS" = 1 ]; then
    if [ "$JETSON" = 1 ] || [ -n "$PREFIX" ]; then
      sys systemctl enable --now edge-inspect-clocks.service
    else
      note "not a Jetson: --clocks ignored"
    fi
  else
    note "not asked (--clocks enables nvpmodel + jetson_clocks at boot)"
  fi
fi

# -- 10. check what was installed ------------------------------------------------------------------------
say "config check and doctor"
if ! skipped check; then
  if [ -x "$VENV/bin/edge-inspect" ] && [ -f "$ETC/station.yaml" ]; then
    if ! run "$VENV/bin/edge-inspect" config check "$ETC/station.yaml"; then
      if [ -z "$PREFIX" ] && systemctl is-active --quiet edge-inspect 2>/dev/null; then
        note "config check failed while the service runs (it holds its own ports): the restart checks again"
      else
        echo "install.sh: fix $ETC/station.yaml (errors above), then run install.sh again" >&2
        exit 1
      fi
    fi
    # findings only: a station without its camera connected yet is still worth installing
    run "$VENV/bin/edge-inspect" doctor --quick -c "$ETC/station.yaml" || note "doctor found problems (above)"
  else
    note "would run: $VENV/bin/edge-inspect config check $ETC/station.yaml; edge-inspect doctor"
  fi
fi

# -- 11. the service ------------------------------------------------------------------------------------------
say "service"
if ! skipped service; then
  if [ "$START" = 0 ]; then
    note "--no-start: enable with: systemctl enable --now edge-inspect"
  elif [ -z "$PREFIX" ] && systemctl is-active --quiet edge-inspect 2>/dev/null; then
    if [ "$CHANGED" = 1 ] || [ "$UNITS_CHANGED" = 1 ]; then
      sys systemctl restart edge-inspect
    else
      note "running and unchanged"
    fi
  else
    sys systemctl enable --now edge-inspect
  fi
fi

say "done"
note "status: systemctl status edge-inspect; logs: journalctl -u edge-inspect -f"
note "config: $ETC/station.yaml (then: systemctl restart edge-inspect)"
