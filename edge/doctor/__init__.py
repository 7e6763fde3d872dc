"""`edge-inspect doctor`: check the host and the station's config, and say what to fix.

Each finding has a level (ok / warn / error), what was found, and how to fix it. Exit code 0:
nothing blocks a run; 1: something does (2: bad usage, from argparse).
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.doctor.backlog import check_outbox
from edge.doctor.camera import check_cameras, check_producers, gige_configured
from edge.doctor.findings import Finding, Host, exit_code, format_json, format_text
from edge.doctor.host import check_gpu, check_jetson, check_packages, check_python
from edge.doctor.network import check_network, check_ports, check_reachable
from edge.doctor.station import check_config, check_disk, check_engine, listeners, peers

__all__ = ["Finding", "Host", "default_config", "exit_code", "format_json", "format_text", "run_doctor"]

STATION_CONFIG = Path("/etc/edge-inspect/station.yaml")
STATE_DIR = Path("/var/lib/edge-inspect")


def default_config(env: dict[str, str] | None = None) -> Path | None:
    """EDGE_INSPECT_CONFIG, else the installed station config if there is one."""
    env = dict(os.environ) if env is None else env
    if env.get("EDGE_INSPECT_CONFIG"):
        return Path(env["EDGE_INSPECT_CONFIG"])
    return STATION_CONFIG if STATION_CONFIG.is_file() else None


def run_doctor(config: Path | None, quick: bool = False, host: Host | None = None) -> list[Finding]:
    """Every check, in the order a line engineer fixes things: software, hardware, config, I/O."""
    host = host or Host(env=dict(os.environ))
    findings: list[Finding] = []
    findings += check_python()
    findings += check_packages()
    cfg = None
    if config is None:
        findings.append(
            Finding(
                "config",
                "warn",
                "no config given (and none at /etc/edge-inspect/station.yaml): host checks only",
                "edge-inspect doctor -c /path/to/station.yaml",
            )
        )
    else:
        found, cfg = check_config(config)
        findings += found
    need_trt = cfg is not None and str(cfg.engine.type) == "tensorrt"
    findings += check_gpu(host, need_tensorrt=need_trt)
    findings += check_jetson(host)
    findings += check_producers(host.env)
    if cfg is not None:
        findings += check_engine(cfg, host, quick)
        findings += check_cameras(cfg.cameras, cfg.base_dir, host.env, quick)
    findings += check_network(host, gige=cfg is not None and gige_configured(cfg.cameras))
    findings += check_disk(cfg, [STATE_DIR])
    if cfg is not None:
        findings += check_outbox(cfg)
        binds = listeners(cfg)
        findings += check_ports(binds)
        seen: dict[tuple[str, int], str] = {}
        for what, h, port in binds:
            if port and (h, port) in seen:
                findings.append(
                    Finding(
                        "ports",
                        "error",
                        f"{what} and {seen[(h, port)]} both listen on {h}:{port}",
                        "give each listener its own port",
                    )
                )
            seen[(h, port)] = what
        if not quick:
            findings += [check_reachable(what, h, port) for what, h, port in peers(cfg)]
    return findings
