"""Network checks: NIC MTU and socket receive buffers for GigE Vision, ports the service binds."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from edge.doctor.findings import Finding, Host, Level

GIGE_MTU = 9000
RMEM_WANT = 32 << 20  # 32 MiB: a burst of full-resolution GigE frames without drops
SYSCTL_FILE = "/etc/sysctl.d/60-edge-inspect-gige.conf"


def physical_nics(host: Host) -> list[tuple[str, int, str]]:
    """(name, mtu, operstate) of each interface backed by a device (no lo, bridges, veths)."""
    out: list[tuple[str, int, str]] = []
    base = host.sys_root / "class" / "net"
    if not base.is_dir():
        return out
    for nic in sorted(base.iterdir()):
        if not (nic / "device").exists():
            continue
        try:
            mtu = int((nic / "mtu").read_text().strip())
            state = (nic / "operstate").read_text().strip()
        except (OSError, ValueError):
            continue
        out.append((nic.name, mtu, state))
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def check_network(host: Host, gige: bool) -> list[Finding]:
    """MTU of the wired NICs and net.core.rmem_*: warnings when GigE cameras are configured."""
    level: Level = "warn" if gige else "ok"
    why = "GigE Vision cameras are configured" if gige else "no GigE camera configured: informational"
    out: list[Finding] = []
    nics = [n for n in physical_nics(host) if n[2] == "up"]
    if not nics:
        out.append(
            Finding(
                "network",
                level,
                "no wired interface is up" + ("" if gige else f" ({why})"),
                "connect the camera NIC and bring it up" if gige else None,
            )
        )
    for name, mtu, _ in nics:
        if mtu >= GIGE_MTU:
            out.append(Finding("network", "ok", f"{name}: MTU {mtu} (jumbo frames)"))
        else:
            out.append(
                Finding(
                    "network",
                    level,
                    f"{name}: MTU {mtu}, below {GIGE_MTU} ({why}): more packets per frame, "
                    "more CPU, dropped packets at high frame rates",
                    f"on the camera NIC: sudo ip link set dev {name} mtu {GIGE_MTU}; permanently: "
                    "deploy/jetson/install.sh --gige-nic " + name + " (networkd/NetworkManager snippet)",
                )
            )
    core = host.proc_root / "sys" / "net" / "core"
    for key in ("rmem_max", "rmem_default"):
        value = _read_int(core / key)
        if value is None:
            out.append(Finding("network", "warn", f"net.core.{key} not readable under {core}"))
        elif value >= RMEM_WANT:
            out.append(Finding("network", "ok", f"net.core.{key} = {value} ({value >> 20} MiB)"))
        else:
            out.append(
                Finding(
                    "network",
                    level,
                    f"net.core.{key} = {value} ({value >> 10} KiB), below {RMEM_WANT >> 20} MiB "
                    f"({why}): the GigE stream socket drops packets under load",
                    f"sudo sysctl -w net.core.{key}={RMEM_WANT}; permanently: {SYSCTL_FILE} "
                    "(deploy/jetson/install.sh writes it)",
                )
            )
    return out


def port_free(host: str, port: int) -> str | None:
    """None if (host, port) can be bound for listening now, else why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use by another process"
            if exc.errno == errno.EACCES:
                return "needs privileges (ports below 1024)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this host"
            return str(exc)
    return None


def edge_inspect_listening(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether what holds host:port is a running edge-inspect (its /metrics: the metrics port or
    the status page): then the port is taken by this service, not by a stranger."""
    import urllib.request

    probe = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    try:
        with urllib.request.urlopen(f"http://{probe}:{port}/metrics", timeout=timeout_s) as r:
            return b"edge_frames_in" in r.read(1 << 20)
    except Exception:  # not HTTP, refused, another server: not ours
        return False


def check_ports(binds: list[tuple[str, str, int]]) -> list[Finding]:
    """Each (what, host, port) the service will listen on must be free (port 0: chosen at start)."""
    out: list[Finding] = []
    for what, host, port in binds:
        if port == 0:
            out.append(Finding("ports", "ok", f"{what}: port 0 (any free port at start)"))
            continue
        problem = port_free(host, port)
        if problem is None:
            out.append(Finding("ports", "ok", f"{what}: {host}:{port} is free"))
        elif problem.startswith("in use") and edge_inspect_listening(host, port):
            out.append(
                Finding(
                    "ports",
                    "ok",
                    f"{what}: {host}:{port} is held by a running edge-inspect "
                    "(this service; a second instance would need other ports)",
                )
            )
        else:
            out.append(
                Finding(
                    "ports",
                    "error",
                    f"{what}: cannot listen on {host}:{port}: {problem}",
                    f"stop what holds it (ss -ltnp 'sport = :{port}') or change the port in the config",
                )
            )
    return out


def check_reachable(what: str, host: str, port: int, timeout_s: float = 2.0) -> Finding:
    """A peer the service connects to (an MQTT broker, an OPC UA server): reachable now?"""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        return Finding(
            "ports",
            "warn",
            f"{what}: {host}:{port} not reachable now ({exc.strerror or exc}); verdicts wait in the outbox until it is",
            f"start the peer or fix host/port for {what}",
        )
    return Finding("ports", "ok", f"{what}: {host}:{port} reachable")
