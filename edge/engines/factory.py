"""Build and load an engine from its validated config section."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.engines.base import Engine, EngineConfigBase
from edge.errors import ConfigError
from edge.registry import engine_registry


def build_engine(config: EngineConfigBase | Mapping[str, Any], base_dir: Path) -> Engine:
    """Construct the engine `config` describes and `load()` it (idempotent for a loaded engine).

    `config` is a validated engine config (any `EngineConfigBase` with `build(base_dir)`), or a
    raw mapping with a `type`, validated through the engine registry. Relative model paths are
    resolved against `base_dir` (the config file's folder).
    """
    if isinstance(config, Mapping):
        config = engine_registry().validate(config)  # type: ignore[assignment]
    build = getattr(config, "build", None)
    if build is None:
        raise ConfigError(f"engine config {type(config).__name__} has no build()")
    engine: Engine = build(Path(base_dir))
    engine.load()
    return engine
