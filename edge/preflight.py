"""Every check `run` makes before it opens a camera or loads an inference runtime, in one place.

`edge-inspect config check` and `edge-inspect run` both call `preflight(cfg)`, so a config that
check calls OK is not refused by run for anything short of the camera or the runtime itself,
and both say the same thing: the model file (exists, is a file, is a detection model whose
metadata names its classes -- read from the file's header, no runtime loaded), the decision
rules against those class names and the thresholds file, the golden references, GenICam
buffers against the ring, every sink's target (a sink config may have `preflight(base_dir)`),
and the metrics and web endpoints (host resolvable and local, port free).
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

from edge.config import LoadedConfig
from edge.errors import EdgeInspectError


def check_buffers(cfg: LoadedConfig) -> list[str]:
    """A camera with fewer frame buffers than the ring holds frames would stall."""
    slots = cfg.app.pipeline.ring_slots
    out = []
    for i, cam in enumerate(cfg.cameras):
        nbuf = getattr(cam, "num_buffers", None)
        if nbuf is not None and nbuf <= slots:
            out.append(
                f"cameras[{i}].num_buffers ({nbuf}) must exceed pipeline.ring_slots ({slots}): "
                "the ring holds camera buffers until their verdicts"
            )
    return out


def bind_problem(host: str, port: int, what: str = "metrics") -> str | None:
    """Why a TCP server could not listen on host:port (None: it can, now)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"{what}.host: cannot resolve {host!r} ({exc})"
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        return describe_bind_error(host, port, exc, what)
    finally:
        sock.close()
    return None


def describe_bind_error(host: str, port: int, exc: OSError, what: str = "metrics") -> str:
    """One line for a failed bind, naming the config key to change."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{what}.port: {host}:{port} is already in use (another edge-inspect or exporter?); "
            f"free it, pick another port, or set {what}.port: 0"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{what}.host: {host} is not an address of this host"
    if exc.errno == errno.EACCES:
        return f"{what}.port: {port} needs privileges to bind; use a port above 1023"
    return f"{what}: cannot listen on {host}:{port} ({exc.strerror or exc})"


def model_problems(cfg: LoadedConfig) -> tuple[list[str], Any]:
    """Problems with the model file, and its `ModelInfo` (None when it cannot be read)."""
    from edge.engines.model import read_model_info, resolve_model_path

    engine = cfg.engine
    model = getattr(engine, "model", None)
    if engine is None or not isinstance(model, str):
        return [], None
    path = resolve_model_path(model, cfg.base_dir)
    if not path.is_file():
        kind = "is a folder, not a model file" if path.is_dir() else "model file not found (or not a file)"
        return [f"engine.model: {path}: {kind}"], None
    if path.suffix.lower() != ".onnx":  # an OpenVINO IR or a plan: its runtime reads it
        return [], None
    try:
        return [], read_model_info(path, getattr(engine, "classes", None))
    except EdgeInspectError as exc:
        return [f"engine.model: {exc}"], None


def preflight(cfg: LoadedConfig, *, ports: bool = True) -> list[str]:
    """Every problem `run` would refuse this config for before opening cameras and the runtime."""
    from edge.decision import compile_rules
    from edge.errors import ConfigError

    problems = check_buffers(cfg)
    found, info = model_problems(cfg)
    problems += found
    if info is not None:
        try:
            compile_rules(cfg.app.decision, info.names, Path(info.path), cfg.base_dir)
        except EdgeInspectError as exc:
            problems += exc.errors if isinstance(exc, ConfigError) else [str(exc)]
        try:
            from edge.app import load_references

            load_references(cfg, info)
        except ConfigError as exc:
            problems += exc.errors
    for i, sink in enumerate(cfg.sinks):
        check = getattr(sink, "preflight", None)
        if callable(check):
            problems += [f"sinks[{i}]: {p}" for p in check(cfg.base_dir)]
    m = cfg.app.metrics
    if ports and m.enabled and m.port != 0:
        problem = bind_problem(m.host, m.port)
        if problem is not None:
            problems.append(problem)
    web = getattr(cfg.app, "web", None)  # the status page / API
    if ports and web is not None and getattr(web, "enabled", False) and getattr(web, "port", 0):
        problem = bind_problem(web.host, web.port, "web")
        if problem is not None:
            problems.append(problem)
    return problems
