"""Checks that read the station's config: valid, model present, engine runnable and cached,
output folders with room, ports free, peers reachable."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from edge.config import LoadedConfig, load_config
from edge.doctor.findings import Finding, Host
from edge.doctor.host import free_bytes, nvidia_gpus, tensorrt_version
from edge.errors import ConfigError

DISK_ERROR_BYTES = 512 << 20  # below this the audit trail stops within minutes
DISK_WARN_BYTES = 5 << 30
_OUTPUT_KEY = re.compile(r"(^|_)(path|dir|directory|file|folder)$")
_INPUT_SECTIONS = {"cameras", "engine", "references", "decision", "recipes"}


def check_config(path: Path) -> tuple[list[Finding], LoadedConfig | None]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        lines = exc.errors or [str(exc)]
        shown = "; ".join(lines[:5]) + (f"; ... {len(lines) - 5} more" if len(lines) > 5 else "")
        return [
            Finding(
                "config",
                "error",
                f"{path}: {len(lines)} error(s): {shown}",
                f"edge-inspect config check {path} lists them with line numbers",
            )
        ], None
    out = [
        Finding(
            "config",
            "ok",
            f"{path}: valid ({len(cfg.cameras)} camera(s), engine {cfg.engine.type}, "
            f"{len(cfg.sinks)} sink(s), version {cfg.config_version})",
        )
    ]
    out += _preflight(cfg)
    return out, cfg


def _preflight(cfg: LoadedConfig) -> list[Finding]:
    """What `run` refuses before it starts (rules vs the model's classes, references, buffers,
    sink targets): each an error. The model file and ports have findings of their own."""
    from edge.preflight import preflight

    try:
        problems = preflight(cfg, ports=False)
    except Exception as exc:  # the check itself failing is worth a line, not a traceback
        return [Finding("config", "error", f"preflight failed: {exc}", f"edge-inspect config check {cfg.path}")]
    model = str(_model_path(cfg))
    missing_model = not Path(model).is_file()
    return [
        Finding("config", "error", p, f"edge-inspect config check {cfg.path} names the key to change")
        for p in problems
        if not (missing_model and model in p)
    ]


def _model_path(cfg: LoadedConfig) -> Path:
    from edge.engines.model import resolve_model_path

    return resolve_model_path(str(cfg.engine.model), cfg.base_dir)


def check_engine(cfg: LoadedConfig, host: Host, quick: bool) -> list[Finding]:
    """The model file, the engine's runtime, and whether its cache already fits this host."""
    out: list[Finding] = []
    eng = cfg.engine
    model = _model_path(cfg)
    if not model.is_file():
        return [
            Finding(
                "engine",
                "error",
                f"model {model} not found",
                "copy the model there (models/ in the checkout) or fix engine.model",
            )
        ]
    out.append(Finding("engine", "ok", f"model {model} ({model.stat().st_size >> 10} KiB)"))
    kind = str(eng.type)
    if kind in ("onnxruntime", "openvino", "tensorrt") and importlib.util.find_spec(kind) is None:
        out.append(
            Finding(
                "engine",
                "error",
                f"engine.type {kind}: the {kind} package is not installed",
                "pip install -e '.[gpu]'" if kind == "tensorrt" else "pip install -e '.[cpu]'",
            )
        )
        return out
    gpu = bool(nvidia_gpus(host))
    trt = tensorrt_version()
    if kind == "tensorrt" or (kind == "auto" and "tensorrt" in getattr(eng, "candidates", []) and gpu and trt):
        if quick:
            return out
        out.append(_tensorrt_cache(cfg, model, trt))
    elif kind == "auto" and not quick:
        out.append(_auto_choice(cfg, model))
    return out


def _tensorrt_cache(cfg: LoadedConfig, model: Path, trt: str | None) -> Finding:
    from edge.engines.model import model_id_of

    cache_dir = Path(getattr(cfg.engine, "engine_cache_dir", "~/.cache/edge-inspect/tensorrt")).expanduser()
    model_id = model_id_of(model)
    plans = sorted(cache_dir.glob(f"{model_id}-trt*.plan")) if cache_dir.is_dir() else []
    if trt is None:
        return Finding(
            "engine",
            "error",
            "TensorRT engine configured but TensorRT is not importable",
            "install TensorRT (JetPack: python3-libnvinfer) in the service's environment",
        )
    fits = [p for p in plans if p.name.startswith(f"{model_id}-trt{trt}-")]
    if fits:
        return Finding("engine", "ok", f"cached TensorRT plan fits TensorRT {trt}: {fits[0]}")
    if plans:
        return Finding(
            "engine",
            "warn",
            f"cached TensorRT plans in {cache_dir} were built by another TensorRT "
            f"({', '.join(p.name for p in plans)}), not {trt}: the first start rebuilds (minutes)",
            "let the first start rebuild it (the unit's TimeoutStartSec allows 15 min), then delete the old plans",
        )
    return Finding(
        "engine",
        "warn",
        f"no cached TensorRT plan for model {model_id} in {cache_dir}: "
        "the first start builds one (minutes on a Jetson)",
        f"expected; to build it ahead: edge-inspect run -c {cfg.path} --frames 1",
    )


def _auto_choice(cfg: LoadedConfig, model: Path) -> Finding:
    from edge.engines.auto import choice_key, key_digest, read_cache, runtime_installed

    eng = cfg.engine
    cpu = [r for r in eng.candidates if r != "tensorrt" and runtime_installed(r)]
    if not cpu:
        return Finding(
            "engine", "error", f"engine auto: none of {eng.candidates} is installed", "pip install -e '.[cpu]'"
        )
    cache = Path(eng.cache_file).expanduser()
    cached = read_cache(cache).get(key_digest(choice_key(model, cpu, eng.batch)))
    if isinstance(cached, dict) and cached.get("runtime") in cpu:
        return Finding(
            "engine", "ok", f"engine auto: cached choice {cached['runtime']} for this model and host ({cache})"
        )
    return Finding(
        "engine",
        "ok",
        f"engine auto: no cached choice for this host yet; the first start times "
        f"{', '.join(cpu)} (seconds) and remembers the fastest in {cache}",
    )


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, str(k), v
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def output_paths(cfg: LoadedConfig) -> list[tuple[str, Path]]:
    """Where the service writes (sinks' files, audit, evidence, outbox journals): (config key, path)."""
    data = cfg.app.model_dump()
    data["sinks"] = [s.model_dump() if s is not None else {} for s in cfg.sinks]
    out: list[tuple[str, Path]] = []
    for section, value in data.items():
        if section in _INPUT_SECTIONS:
            continue
        for parent, key, v in [("", section, value), *_walk(value, section)]:
            if not (isinstance(v, str) and v and _OUTPUT_KEY.search(key)) or "://" in v:
                continue
            p = Path(v).expanduser()
            if key == "path" and not p.suffix and "/" not in v:  # a name (an OPC UA endpoint path), no file
                continue
            out.append((f"{parent}.{key}" if parent else key, p if p.is_absolute() else cfg.base_dir / p))
    return out


def check_disk(cfg: LoadedConfig | None, extra: list[Path]) -> list[Finding]:
    """Free space and write access where the service writes (state, audit, evidence, outbox)."""
    targets = output_paths(cfg) if cfg is not None else []
    targets += [("state directory", p) for p in extra if p.exists()]
    out: list[Finding] = []
    folders: dict[Path, list[str]] = {}
    for key, path in targets:
        folder = path if (path.is_dir() or not path.suffix) else path.parent
        found = free_bytes(folder)
        if found is None:
            out.append(Finding("disk", "error", f"{key}: {path}: no existing parent folder"))
            continue
        folders.setdefault(found[0], []).append(key)
    for existing, keys in folders.items():
        found = free_bytes(existing)
        if found is None:
            continue
        free = found[1]
        what = ", ".join(dict.fromkeys(keys))
        if not os.access(existing, os.W_OK):
            out.append(
                Finding(
                    "disk",
                    "error",
                    f"{what}: {existing} is not writable by this user",
                    f"chown the folder to the service user (edge-inspect) or change {keys[0]}",
                )
            )
        elif free < DISK_ERROR_BYTES:
            out.append(
                Finding(
                    "disk",
                    "error",
                    f"{what}: only {free >> 20} MiB free at {existing}",
                    "free space or move the state/audit/evidence folders to a bigger disk",
                )
            )
        elif free < DISK_WARN_BYTES:
            out.append(
                Finding(
                    "disk",
                    "warn",
                    f"{what}: {free / (1 << 30):.1f} GiB free at {existing}: the audit trail and evidence fill it",
                    "free space, or lower the audit/evidence retention",
                )
            )
        else:
            out.append(Finding("disk", "ok", f"{what}: {free / (1 << 30):.1f} GiB free at {existing}"))
    return out


def listeners(cfg: LoadedConfig) -> list[tuple[str, str, int]]:
    """(what, host, port) the service listens on: metrics, any top-level host/port section (web),
    and server sinks (opcua-server: endpoint opc.tcp://host:port or host/port)."""
    out: list[tuple[str, str, int]] = []
    m = cfg.app.metrics
    if m.enabled and m.port:
        out.append(("metrics", m.host, m.port))
    raw = cfg.app.model_dump()
    for section, value in raw.items():
        if section in ("metrics", "sinks") or not isinstance(value, dict):
            continue
        if isinstance(value.get("port"), int) and value.get("enabled", True) is not False:
            out.append((section, str(value.get("host") or "127.0.0.1"), int(value["port"])))
    for i, sink in enumerate(cfg.sinks):
        if sink is None or "server" not in str(getattr(sink, "type", "")):
            continue
        addr = _address(sink)
        if addr is not None:
            out.append((f"sinks[{i}] ({sink.type})", *addr))
    return out


def peers(cfg: LoadedConfig) -> list[tuple[str, str, int]]:
    """(what, host, port) the service connects to: client sinks with a host/port or URL (MQTT broker)."""
    out = []
    for i, sink in enumerate(cfg.sinks):
        if sink is None or "server" in str(getattr(sink, "type", "")):
            continue
        addr = _address(sink)
        if addr is not None:
            out.append((f"sinks[{i}] ({sink.type})", *addr))
    return out


def _address(model: Any) -> tuple[str, int] | None:
    data = model.model_dump() if hasattr(model, "model_dump") else dict(model)
    for key in ("endpoint", "url"):
        url = data.get(key)
        if isinstance(url, str) and "://" in url:
            u = urlparse(url)
            if u.hostname and u.port:
                return u.hostname, u.port
    host = data.get("host") or data.get("broker")
    port = data.get("port")
    if isinstance(host, str) and isinstance(port, int) and port > 0:
        return host, port
    return None
