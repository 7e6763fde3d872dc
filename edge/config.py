"""Configuration: one YAML file, validated by pydantic v2 models (`extra="forbid"` everywhere).

Plugin sections (`cameras[]`, `engine`, `sinks[]`) are validated by the model their `type`
names in the registries, so a typo anywhere is an error that names its path and line.
Secrets come from the environment: `${NAME}` or `${NAME:-default}` inside any string value.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.decision import DecisionConfig
from edge.errors import ConfigError
from edge.metrics import MetricsConfig
from edge.registry import Registry, camera_registry, engine_registry, sink_registry

PathKey = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_ms: float = Field(250.0, gt=0, description="Capture-to-verdict deadline per frame.")
    ring_slots: int = Field(8, ge=2, le=1024, description="Frames held at once (camera buffers).")
    overflow: Literal["failsafe_oldest", "failsafe_newest"] = Field(
        "failsafe_oldest", description="Which frame gives way when the ring is full."
    )
    drain_timeout_s: float = Field(5.0, ge=0, description="Longest wait for in-flight frames at stop.")
    batch_wait_ms: float = Field(
        2.0, ge=0, description="With engine.batch > 1: how long the worker waits to fill a batch."
    )


class ReferenceAlignConfig(BaseModel):
    """The `reference_align:` section: correct a part's shift against its golden reference."""

    model_config = ConfigDict(extra="forbid")

    max_shift_px: int = Field(
        0,
        ge=0,
        le=256,
        description="Largest shift (px, either axis) between a frame and its reference to correct "
        "before composing (phase correlation, whole pixels); 0: off, frames are aligned already.",
    )
    min_response: float = Field(
        0.05, ge=0, le=1, description="Weakest correlation peak trusted as a shift (else none is applied)."
    )


class AppConfig(BaseModel):
    """The top level; plugin sections stay raw here and are validated by their own models."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field("1", description="Your config version, carried in every verdict.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Service log level.")
    cameras: list[dict[str, Any]] = Field(..., min_length=1, description="One or more cameras (see `cameras[]`).")
    engine: dict[str, Any] = Field(..., description="The inference engine (see `engine`).")
    decision: DecisionConfig = Field(default_factory=DecisionConfig, description="Decision rules.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Deadline and ring.")
    sinks: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"type": "log"}], description="Where verdicts go (default: the log)."
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus endpoint.")
    reference_align: ReferenceAlignConfig = Field(
        default_factory=ReferenceAlignConfig, description="Golden-reference models: shift correction."
    )
    references: dict[str, str] = Field(
        default_factory=dict,
        description="For a golden-reference model: camera name -> its defect-free reference image "
        "(aligned with the camera's frames, same size; a replay camera can give one per image instead).",
    )


@dataclass
class LoadedConfig:
    path: Path | None
    base_dir: Path
    app: AppConfig
    cameras: list[Any]
    engine: Any
    sinks: list[Any]
    config_version: str


def _line_map(text: str) -> dict[PathKey, int]:
    """Map each key path to its 1-based line in the YAML text."""
    lines: dict[PathKey, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: PathKey) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def format_path(path: PathKey) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class _Errors:
    def __init__(self, source: str, lines: dict[PathKey, int]) -> None:
        self.source = source
        self.lines = lines
        self.items: list[str] = []

    def add(self, path: PathKey, message: str) -> None:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        where = f"{self.source}:{line}" if line is not None else self.source
        self.items.append(f"{where}: {format_path(path)}: {message}")

    def add_validation(self, prefix: PathKey, exc: ValidationError) -> None:
        for e in exc.errors(include_url=False):
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = "unknown key (not allowed here; check the spelling)"
            elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], (dict, list)):
                msg = f"{msg} (got {e['input']!r})"
            self.add(prefix + loc, msg)


def expand_env(value: Any, path: PathKey, errors: _Errors, env: Mapping[str, str]) -> Any:
    """Replace `${NAME}` / `${NAME:-default}` in every string; a missing variable is an error."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.add(path, f"environment variable {name} is not set")
            return ""

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, path + (k,), errors, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, path + (i,), errors, env) for i, v in enumerate(value)]
    return value


def _validate_plugin(
    registry: Registry, data: Any, path: PathKey, errors: _Errors
) -> BaseModel | None:
    if not isinstance(data, dict):
        errors.add(path, f"expected a mapping with a 'type' (one of: {', '.join(registry.types())})")
        return None
    type_name = data.get("type")
    if type_name not in registry.types():
        errors.add(
            path + ("type",),
            f"unknown {registry.kind} type {type_name!r}; known: {', '.join(registry.types())}",
        )
        return None
    try:
        return registry.validate(data)
    except ValidationError as exc:
        errors.add_validation(path, exc)
    except ConfigError as exc:
        errors.add(path, str(exc))
    return None


def parse_config(
    text: str,
    source: str = "<config>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Parse and validate config text; raises ConfigError listing every problem found."""
    lines = _line_map(text)
    errors = _Errors(source, lines)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    raw = expand_env(raw, (), errors, os.environ if env is None else env)
    app: AppConfig | None = None
    try:
        app = AppConfig.model_validate(raw)
    except ValidationError as exc:
        errors.add_validation((), exc)

    cameras: list[Any] = []
    sinks: list[Any] = []
    engine: Any = None
    cam_reg, eng_reg, sink_reg = camera_registry(), engine_registry(), sink_registry()
    for i, cam in enumerate(raw.get("cameras") or []):
        cameras.append(_validate_plugin(cam_reg, cam, ("cameras", i), errors))
    if "engine" in raw:
        engine = _validate_plugin(eng_reg, raw["engine"], ("engine",), errors)
    for i, sink in enumerate(raw.get("sinks") or ([] if app is None else app.sinks)):
        sinks.append(_validate_plugin(sink_reg, sink, ("sinks", i), errors))

    names = [getattr(c, "name", None) for c in cameras if c is not None]
    dupes = sorted({str(n) for n in names if names.count(n) > 1 and n is not None})
    if dupes:
        errors.add(("cameras",), f"camera names must be unique; repeated: {dupes}")
    sink_names = [str(getattr(s, "name", None) or getattr(s, "type", "")) for s in sinks if s is not None]
    sdupes = sorted({n for n in sink_names if sink_names.count(n) > 1})
    if sdupes:
        errors.add(("sinks",), f"sink names must be unique (set 'name:'); repeated: {sdupes}")
    unknown = sorted(set(app.references) - {str(n) for n in names}) if app is not None else []
    if unknown:
        errors.add(("references",), f"references name cameras that do not exist: {unknown}")

    if errors.items or app is None:
        raise ConfigError(f"{source}: {len(errors.items)} error(s)\n  " + "\n  ".join(errors.items), errors.items)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return LoadedConfig(
        path=None,
        base_dir=base_dir or Path.cwd(),
        app=app,
        cameras=cameras,
        engine=engine,
        sinks=sinks,
        config_version=f"{app.version}+{digest}",
    )


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from exc
    cfg = parse_config(text, str(p), p.resolve().parent, env)
    cfg.path = p
    return cfg
