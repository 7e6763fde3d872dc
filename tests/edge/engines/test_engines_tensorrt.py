"""The TensorRT engine imports and fails cleanly without TensorRT (edge.engines.tensorrt)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from edge.engines.model import read_model_info
from edge.engines.tensorrt import (
    TensorRtEngine,
    TensorRtEngineConfig,
    network_input_shape,
    network_source,
    plan_file_name,
)
from edge.errors import EngineError, EngineUnavailableError
from edge.onnx_edit.pixel_input import PIXEL_INPUT
from edge.registry import engine_registry

EngineWithout = Callable[[dict[str, Any], Sequence[str], str], None]


def test_module_imports_without_tensorrt(
    engine_without_modules: EngineWithout, model_path: Path, tmp_path: Path
) -> None:
    """Without TensorRT, pycuda or torch the module imports, its config validates and builds, and
    `load()` says what is missing (in a fresh interpreter where importing them fails)."""
    section = {"type": "tensorrt", "model": str(model_path), "engine_cache_dir": str(tmp_path)}
    engine_without_modules(section, ["tensorrt", "pycuda", "torch"], "TensorRT is not installed")


def test_config_validation() -> None:
    cfg = engine_registry().validate({"type": "tensorrt", "model": "m.onnx", "fp16": False, "workspace_mb": 512})
    assert isinstance(cfg, TensorRtEngineConfig)
    assert cfg.fp16 is False and cfg.workspace_mb == 512 and cfg.engine_cache_dir.endswith("tensorrt")
    assert cfg.fuse_preprocess is True  # uint8 pixels to the GPU by default
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
    # a plan built for the pixel input is never loaded for the float input, and back
    assert plan_file_name("x", "10.3.0", "Orin", True, 1, pixels=True).endswith("orin-fp16-b1-u8in.plan")


def test_network_input_shape() -> None:
    assert network_input_shape((2, 3, 320, 256), pixels=False) == (2, 3, 320, 256)
    assert network_input_shape((2, 3, 320, 256), pixels=True) == (2, 320, 256, 3)
    assert network_input_shape((1, 1, 64, 64), pixels=True) == (1, 64, 64, 1)


def test_network_source_is_the_model_or_its_pixel_front(
    model_path: Path, pixels_to_tensor: Callable[[np.ndarray], np.ndarray]
) -> None:
    """What TensorRT would parse: the file as is, or a model whose uint8 input only feeds a Cast
    (TensorRT's rule for UINT8) and that gives the shipped model's outputs bit for bit (run here
    on ONNX Runtime, since TensorRT is not installed on CPU hosts)."""
    ort = pytest.importorskip("onnxruntime")
    assert network_source(model_path, pixels=False) == model_path.read_bytes()
    fused = onnx.load_from_string(network_source(model_path, pixels=True))
    onnx.checker.check_model(fused)
    assert fused.graph.input[0].name == PIXEL_INPUT
    assert [n.op_type for n in fused.graph.node if PIXEL_INPUT in n.input] == ["Cast"]
    h, w = read_model_info(model_path).input_hw
    pixels = np.random.default_rng(7).integers(0, 256, (1, h, w, 3), dtype=np.uint8)

    def run(source: bytes, feed: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, {sess.get_inputs()[0].name: feed})[0])

    via_pixels = run(fused.SerializeToString(), pixels)
    np.testing.assert_array_equal(via_pixels, run(model_path.read_bytes(), pixels_to_tensor(pixels)))


@pytest.mark.gpu
def test_real_model_on_gpu(model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda")
    engine = TensorRtEngineConfig(model=str(model_path), engine_cache_dir=str(tmp_path), fp16=False).build(tmp_path)
    info = engine.load()
    h, w = info.input_hw
    assert engine.input_buffer().shape == (1, h, w, 3) and engine.input_buffer().dtype == np.uint8
    engine.input_buffer()[...] = 128
    anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert engine.infer().shape == (1, 10, anchors)
    engine.close()
