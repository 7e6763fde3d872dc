"""Plugin registries keyed by config `type`.

An entry names its config model by dotted path (``"cameras.replay:ReplayCameraConfig"``) so that
a plugin's runtime (harvesters, OpenVINO, ...) is imported only when that plugin is used. Each
config model is a pydantic model with ``extra="forbid"`` and a ``build(...)`` method that
constructs the plugin. Registries are plain objects built by functions, never module globals.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from edge.errors import ConfigError


class Registry:
    """Maps a plugin `type` to the pydantic config model that validates and builds it."""

    def __init__(self, kind: str, entries: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, str] = dict(entries or {})

    def register(self, type_name: str, config_model: str | type[BaseModel]) -> None:
        if isinstance(config_model, str):
            self._entries[type_name] = config_model
        else:
            self._entries[type_name] = f"{config_model.__module__}:{config_model.__qualname__}"

    def types(self) -> list[str]:
        return sorted(self._entries)

    def model(self, type_name: str) -> type[BaseModel]:
        try:
            target = self._entries[type_name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} type {type_name!r}; known: {', '.join(self.types())}"
            ) from None
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        model = getattr(module, attr)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{target} is not a pydantic model")
        return model

    def validate(self, data: Mapping[str, Any]) -> BaseModel:
        """Validate one plugin section (a mapping with `type`) with its plugin's model."""
        type_name = data.get("type")
        if not isinstance(type_name, str):
            raise ConfigError(f"{self.kind} needs a 'type' (one of: {', '.join(self.types())})")
        return self.model(type_name).model_validate(dict(data))


def camera_registry() -> Registry:
    return Registry(
        "camera",
        {
            "genicam": "cameras.genicam:GenICamCameraConfig",
            "replay": "cameras.replay:ReplayCameraConfig",
            "opencv": "cameras.opencv:OpenCVCameraConfig",
        },
    )


def engine_registry() -> Registry:
    return Registry(
        "engine",
        {
            "auto": "edge.engines.auto:AutoEngineConfig",
            "onnxruntime": "edge.engines.onnxruntime:OnnxRuntimeEngineConfig",
            "openvino": "edge.engines.openvino:OpenVinoEngineConfig",
            "tensorrt": "edge.engines.tensorrt:TensorRtEngineConfig",
            "ultralytics": "edge.engines.ultralytics:UltralyticsEngineConfig",
        },
    )


SINK_ENTRY_POINTS = "edge_inspect.sinks"


def plugin_entries(group: str) -> dict[str, str]:
    """Plugins other packages declare under a Python entry-point group (name -> "module:Model"),
    so that the core never names them (plc's OPC UA and MQTT sinks, a user's own)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=group)}


def sink_registry() -> Registry:
    entries = plugin_entries(SINK_ENTRY_POINTS)
    entries.update(
        {
            "jsonl": "edge.sinks.jsonl:JsonlSinkConfig",
            "log": "edge.sinks.log:LogSinkConfig",
        }
    )
    return Registry("sink", entries)
