"""The ONNX Runtime engine: IOBinding over preallocated arrays (edge.engines.onnxruntime)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

pytest.importorskip("onnxruntime")

from edge.engines.base import Engine
from edge.engines.factory import build_engine
from edge.engines.onnxruntime import OnnxRuntimeEngine, OnnxRuntimeEngineConfig, default_providers
from edge.errors import EngineError, EngineUnavailableError, ModelError
from edge.registry import engine_registry

TinyModel = Callable[..., Path]
ToTensor = Callable[[np.ndarray], np.ndarray]
Fill = Callable[[np.ndarray, int], None]
EngineCheck = Callable[[Engine], None]


def reference_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])


@pytest.mark.parametrize(("fuse", "rewrite"), [(True, True), (False, True), (True, False)])
def test_real_model_infer_matches_plain_session(
    model_path: Path, fuse: bool, rewrite: bool, pixels_to_tensor: ToTensor, random_input: Fill
) -> None:
    """Float input: the tensor as given; uint8 pixel input (the default): bit-identical to the
    plain session on the float tensor those pixels become; with the graph rewritten for ORT's CPU
    kernels (the default: same numbers up to summation order) or as exported."""
    cfg = OnnxRuntimeEngineConfig(
        model=model_path.name, warmup=1, intra_op_threads=2, fuse_preprocess=fuse, rewrite_graph=rewrite
    )
    engine = build_engine(cfg, model_path.parent)
    as_tensor = pixels_to_tensor if fuse else np.copy
    atol = 1e-3 if rewrite else 1e-4  # the split convolutions sum in another order (boxes in pixels up to 320)
    try:
        assert isinstance(engine, OnnxRuntimeEngine) and isinstance(engine, Engine)
        info = engine.load()
        assert engine.rewrites == ({"dfl_softmax": 1, "split_conv": 9} if rewrite else {})
        assert engine.load() is info  # idempotent
        assert info.num_classes == 6 and info.input_hw == (320, 320)
        buf = engine.input_buffer()
        if fuse:
            assert buf.shape == (1, 320, 320, 3) and buf.dtype == np.uint8
        else:
            assert buf.shape == (1, 3, 320, 320) and buf.dtype == np.float32
        random_input(buf, 0)
        out = engine.infer()
        assert out.shape == (1, 10, 2100) and engine.output_shape() == (1, 10, 2100)
        np.testing.assert_allclose(out, reference_run(model_path, as_tensor(buf)), rtol=1e-5, atol=atol)
        buf[...] = 114 if fuse else 0.5
        again = engine.infer()
        assert again is out  # same preallocated array, refilled
        np.testing.assert_allclose(again, reference_run(model_path, as_tensor(buf)), rtol=1e-5, atol=atol)
        assert engine.providers == ["CPUExecutionProvider"]
    finally:
        engine.close()


def test_infer_allocates_nothing(tiny_model: TinyModel, infer_allocates_nothing: EngineCheck) -> None:
    engine = OnnxRuntimeEngineConfig(model=str(tiny_model()), warmup=3).build(Path("."))
    engine.load()
    engine.input_buffer().fill(0.25)
    for _ in range(5):
        engine.infer()
    try:
        infer_allocates_nothing(engine)
    finally:
        engine.close()


def session_entries(path: Path, keys: tuple[str, ...], **cfg: Any) -> dict[str, str | None]:
    """The session config entries the engine set (None: not set, ONNX Runtime's default)."""
    engine = OnnxRuntimeEngineConfig(model=str(path), warmup=0, **cfg).build(Path("."))
    engine.load()
    try:
        opts = engine._session.get_session_options()
        out: dict[str, str | None] = {}
        for key in keys:
            try:
                out[key] = opts.get_session_config_entry(key)
            except RuntimeError as exc:
                if "does not have" not in str(exc):
                    raise
                out[key] = None
        return out
    finally:
        engine.close()


INTRA, INTER, STOP = "session.intra_op.allow_spinning", "session.inter_op.allow_spinning", "session.force_spinning_stop"


@pytest.mark.parametrize("spin", [True, False])
def test_allow_spinning_reaches_the_session(tiny_model: TinyModel, spin: bool) -> None:
    got = session_entries(tiny_model(), (INTRA, INTER, STOP), allow_spinning=spin)
    assert got == {INTRA: "1" if spin else "0", INTER: "1" if spin else "0", STOP: None}


@pytest.mark.parametrize("stop", [True, False])
def test_spinning_stops_after_each_run_only_when_configured(tiny_model: TinyModel, stop: bool) -> None:
    got = session_entries(tiny_model(), (INTRA, INTER, STOP), stop_spinning_after_run=stop)
    # unset: ONNX Runtime's default, it spins on after a run
    assert got == {INTRA: "1", INTER: "1", STOP: "1" if stop else None}


def test_dynamic_batch_model_takes_the_configured_batch(tiny_model: TinyModel, pixels_to_tensor: ToTensor) -> None:
    path = tiny_model(batch="N")
    engine = OnnxRuntimeEngineConfig(model=str(path), batch=2, warmup=0).build(Path("."))
    info = engine.load()
    assert info.batch == 2
    buf = engine.input_buffer()
    assert buf.shape == (2, 32, 32, 3)
    buf[0], buf[1] = 25, 230
    buf[1, :, :, 0] = 7  # blue differs: the channel swap shows
    out = engine.infer()
    assert out.shape == (2, 7, 1024)
    np.testing.assert_allclose(out[1], reference_run(path, pixels_to_tensor(buf[1:2]))[0], rtol=1e-5, atol=1e-5)
    engine.close()


def test_fixed_batch_model_refuses_another_batch(tiny_model: TinyModel) -> None:
    engine = OnnxRuntimeEngineConfig(model=str(tiny_model()), batch=2).build(Path("."))
    with pytest.raises(EngineError, match="batch is fixed at 1"):
        engine.load()


def test_errors(tiny_model: TinyModel, tmp_path: Path) -> None:
    engine = OnnxRuntimeEngineConfig(model="nope.onnx").build(tmp_path)
    with pytest.raises(EngineError, match="not loaded"):
        engine.infer()
    with pytest.raises(ModelError, match="nope.onnx"):
        engine.load()
    cfg = OnnxRuntimeEngineConfig(model=str(tiny_model()), providers=["NoSuchExecutionProvider"])
    with pytest.raises(EngineUnavailableError, match="NoSuchExecutionProvider"):
        cfg.build(tmp_path).load()
    # a graph ORT cannot run: declared output shape that the Identity graph does not produce
    broken = tiny_model(output_shape=[1, 7, 16])
    with pytest.raises(EngineError, match=str(broken.name)):
        OnnxRuntimeEngineConfig(model=str(broken), warmup=1).build(tmp_path).load()


def test_config_validation() -> None:
    cfg = engine_registry().validate({"type": "onnxruntime", "model": "m.onnx", "graph_optimization": "basic"})
    assert isinstance(cfg, OnnxRuntimeEngineConfig) and cfg.providers is None
    with pytest.raises(ValidationError):
        OnnxRuntimeEngineConfig(model="m.onnx", graph_optimization="max")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        OnnxRuntimeEngineConfig(model="m.onnx", threads=2)  # type: ignore[call-arg]
    assert default_providers(["CPUExecutionProvider", "AzureExecutionProvider"]) == ["CPUExecutionProvider"]
    assert default_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
