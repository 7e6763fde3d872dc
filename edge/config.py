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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.audit.config import AuditConfig
from edge.decision import DecisionConfig
from edge.errors import ConfigError
from edge.evidence import EvidenceConfig
from edge.metrics import MetricsConfig
from edge.redact import Redactor, is_secret_key
from edge.registry import Registry, camera_registry, engine_registry, sink_registry
from edge.web.config import WebConfig

PathKey = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class LineGeometry(BaseModel):
    """The `pipeline.line:` section: the budget from where the ejector is and how fast parts move."""

    model_config = ConfigDict(extra="forbid")

    conveyor_speed_mm_s: float = Field(..., gt=0, description="Conveyor speed (mm/s).")
    camera_to_ejector_mm: float = Field(..., gt=0, description="Distance from the camera's view to the ejector (mm).")
    ejector_actuation_ms: float = Field(0.0, ge=0, description="Time the ejector needs from command to action (ms).")
    safety_margin_ms: float = Field(
        0.0, ge=0, description="Time kept back for the PLC cycle and the network (ms)."
    )

    def budget_ms(self) -> float:
        """Capture-to-verdict time left once the part's travel, actuation and margin are counted."""
        travel_ms = self.camera_to_ejector_mm / self.conveyor_speed_mm_s * 1000.0
        return travel_ms - self.ejector_actuation_ms - self.safety_margin_ms


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_ms: float = Field(
        250.0, gt=0, description="Capture-to-verdict deadline per frame (derived from `line` when that is given)."
    )
    line: LineGeometry | None = Field(
        None, description="Line geometry; when given, each part's deadline is derived from it instead of budget_ms."
    )
    ring_slots: int = Field(8, ge=2, le=1024, description="Frames held at once (camera buffers).")
    overflow: Literal["failsafe_oldest", "failsafe_newest"] = Field(
        "failsafe_oldest", description="Which frame gives way when the ring is full."
    )
    drain_timeout_s: float = Field(5.0, ge=0, description="Longest wait for in-flight frames at stop.")
    batch_wait_ms: float = Field(
        2.0, ge=0, description="With engine.batch > 1: how long the worker waits to fill a batch."
    )

    @model_validator(mode="after")
    def _derive_budget(self) -> PipelineConfig:
        if self.line is not None:
            budget = self.line.budget_ms()
            if budget <= 0:
                travel = self.line.camera_to_ejector_mm / self.line.conveyor_speed_mm_s * 1e3
                raise ValueError(
                    f"line: the part reaches the ejector {travel:.1f} ms after capture, less than "
                    "actuation + safety margin: no time is left to decide"
                )
            self.budget_ms = budget
        return self


class FrameCheckConfig(BaseModel):
    """The `frame_check:` section: which frames are too untrustworthy to judge (FAILSAFE `invalid_frame`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Check every frame before inference.")
    max_size_ratio: float = Field(
        2.0, ge=1.0, description="A frame either side of which is this factor off the camera's geometry is invalid."
    )
    min_side_px: int = Field(16, ge=1, description="Frames smaller than this on either side are invalid.")
    uniform: bool = Field(True, description="Refuse blank or saturated frames (lens cap, lamp out, grey fill).")
    min_std: float = Field(1.0, ge=0, description="A frame whose sampled std (0..255) is at most this is uniform.")
    expected: dict[str, tuple[int, int]] = Field(
        default_factory=dict,
        description="Camera name -> [height, width] its frames must have; else the first frame's size is learned.",
    )


class RecipeConfig(BaseModel):
    """One entry of `recipes:`: a model and the decision rules to run it with."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Model file (relative to the config file), as engine.model.")
    decision: DecisionConfig | None = Field(None, description="Decision rules for it (default: the top-level ones).")
    description: str = Field("", description="Shown to operators and PLCs.")


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
    audit: AuditConfig = Field(default_factory=AuditConfig, description="The audit trail (SQLite, WAL).")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Reject images kept on disk.")
    web: WebConfig = Field(default_factory=WebConfig, description="Status page and HTTP API.")
    reference_align: ReferenceAlignConfig = Field(
        default_factory=ReferenceAlignConfig, description="Golden-reference models: shift correction."
    )
    frame_check: FrameCheckConfig = Field(
        default_factory=FrameCheckConfig, description="Frame validity before inference."
    )
    state_dir: str = Field(
        "state",
        description=
            "Where the service keeps its state (the outbox journal, audit, evidence); relative to the config file.",
    )
    recipes: dict[str, RecipeConfig] = Field(
        default_factory=dict,
        description="Named model + decision sets an operator, the API or the PLC can switch between; "
        "the engine's own model runs as recipe 'default' until another is activated.",
    )
    decision_sets: dict[str, DecisionConfig] = Field(
        default_factory=dict,
        description="Named threshold sets an operator, the API or the PLC can switch between (validated like "
        "`decision`); the top-level `decision` rules are the set 'default'.",
    )
    references: dict[str, str] = Field(
        default_factory=dict,
        description="For a golden-reference model: camera name -> its defect-free reference image "
        "(aligned with the camera's frames, same size; a replay camera can give one per image instead).",
    )

    @field_validator("decision_sets")
    @classmethod
    def _set_names(cls, sets: dict[str, DecisionConfig]) -> dict[str, DecisionConfig]:
        for name in sets:
            if name in ("default", "custom") or not _SET_NAME.fullmatch(name):
                raise ValueError(
                    f"decision set name {name!r}: use letters, digits, '.', '_', '-' (at most 64; "
                    "'default' and 'custom' are reserved)"
                )
        return sets


_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class LoadedConfig:
    path: Path | None
    base_dir: Path
    app: AppConfig
    cameras: list[Any]
    engine: Any
    sinks: list[Any]
    config_version: str
    # values taken from the environment or held under secret-looking keys: hidden by edge.redact
    secrets: frozenset[str] = frozenset()

    @property
    def state_path(self) -> Path:
        """`state_dir` resolved: relative to the config file's folder."""
        p = Path(self.app.state_dir).expanduser()
        return p if p.is_absolute() else self.base_dir / p


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
        self.secrets: frozenset[str] = frozenset()

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
                secret = any(is_secret_key(p) for p in loc) or str(e["input"]) in self.secrets
                msg = f"{msg} (got ***)" if secret else f"{msg} (got {e['input']!r})"
            self.add(prefix + loc, msg)


def expand_env(
    value: Any, path: PathKey, errors: _Errors, env: Mapping[str, str], found: set[str] | None = None
) -> Any:
    """Replace `${NAME}` / `${NAME:-default}` in every string; a missing variable is an error.
    Every value taken from the environment is added to `found` (secrets to redact: `edge.redact`)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                if found is not None:
                    found.add(env[name])
                return env[name]
            if default is not None:
                return default
            errors.add(path, f"environment variable {name} is not set")
            return ""

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, path + (k,), errors, env, found) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, path + (i,), errors, env, found) for i, v in enumerate(value)]
    return value


def secret_values(value: Any, under_secret: bool = False) -> set[str]:
    """Strings held under a secret-looking key (password, token, ...) anywhere in raw config data."""
    if isinstance(value, str):
        return {value} if under_secret and value else set()
    if isinstance(value, dict):
        out: set[str] = set()
        for k, v in value.items():
            out |= secret_values(v, under_secret or is_secret_key(k))
        return out
    if isinstance(value, list):
        return set().union(*(secret_values(v, under_secret) for v in value)) if value else set()
    return set()


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
    secrets: set[str] = set()
    raw = expand_env(raw, (), errors, os.environ if env is None else env, secrets)
    secrets |= secret_values(raw)
    errors.secrets = frozenset(secrets)
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
        items = [Redactor(errors.secrets).redact(e) for e in errors.items]
        raise ConfigError(f"{source}: {len(items)} error(s)\n  " + "\n  ".join(items), items)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return LoadedConfig(
        path=None,
        base_dir=base_dir or Path.cwd(),
        app=app,
        cameras=cameras,
        engine=engine,
        sinks=sinks,
        config_version=f"{app.version}+{digest}",
        secrets=errors.secrets,
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
