"""build_engine: config section -> loaded engine (edge.engines.factory)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edge.engines.factory import build_engine
from edge.errors import ConfigError

TinyModel = Callable[..., Path]


def test_build_from_mapping_resolves_relative_model(tiny_model: TinyModel) -> None:
    pytest.importorskip("onnxruntime")
    path = tiny_model()
    engine = build_engine({"type": "onnxruntime", "model": path.name, "warmup": 0}, path.parent)
    assert engine.runtime == "onnxruntime"
    assert engine.input_buffer().shape == (1, 32, 32, 3)  # uint8 pixels (fuse_preprocess)
    engine.close()


def test_unknown_type() -> None:
    with pytest.raises(ConfigError, match="unknown engine type"):
        build_engine({"type": "tflite", "model": "m.onnx"}, Path("."))
