"""The TensorRT engine imports and fails cleanly without TensorRT (edge.engines.tensorrt)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.engines.tensorrt import TensorRtEngine, TensorRtEngineConfig, plan_file_name
from edge.errors import EngineError, EngineUnavailableError
from edge.registry import engine_registry


def test_module_imports_without_tensorrt() -> None:
    assert "edge.engines.tensorrt" in sys.modules
    if importlib.util.find_spec("tensorrt") is None:
        assert "tensorrt" not in sys.modules


def test_config_validation() -> None:
    cfg = engine_registry().validate({"type": "tensorrt", "model": "m.onnx", "fp16": False, "workspace_mb": 512})
    assert isinstance(cfg, TensorRtEngineConfig)
    assert cfg.fp16 is False and cfg.workspace_mb == 512 and cfg.engine_cache_dir.endswith("tensorrt")
    with pytest.raises(ValidationError):
        TensorRtEngineConfig(model="m.onnx", workspace_mb=1)
    with pytest.raises(ValidationError):
        TensorRtEngineConfig(model="m.onnx", int8=True)  # type: ignore[call-arg]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_load_without_tensorrt_raises_unavailable(model_path: Path, tmp_path: Path) -> None:
    engine = TensorRtEngineConfig(model=str(model_path), engine_cache_dir=str(tmp_path)).build(tmp_path)
    assert isinstance(engine, TensorRtEngine) and engine.runtime == "tensorrt"
    with pytest.raises(EngineUnavailableError, match="TensorRT is not installed"):
        engine.load()
    with pytest.raises(EngineError, match="not loaded"):
        engine.infer()
    engine.close()  # closing an engine that never loaded is fine


def test_plan_file_name_is_keyed_and_safe() -> None:
    name = plan_file_name("0123456789abcdef", "10.3.0", "NVIDIA GeForce RTX 4090", True, 1)
    assert name == "0123456789abcdef-trt10.3.0-nvidia-geforce-rtx-4090-fp16-b1.plan"
    assert plan_file_name("x", "10.3.0", "Orin (nvgpu)", False, 2).endswith("orin-nvgpu-fp32-b2.plan")


@pytest.mark.gpu
def test_real_model_on_gpu(model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda")
    engine = TensorRtEngineConfig(model=str(model_path), engine_cache_dir=str(tmp_path), fp16=False).build(tmp_path)
    info = engine.load()
    assert info.input_hw == (320, 320)
    engine.input_buffer()[...] = 0.5
    assert engine.infer().shape == (1, 10, 2100)
    engine.close()
