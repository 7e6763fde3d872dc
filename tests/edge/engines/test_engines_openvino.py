"""The OpenVINO engine: shared-memory tensors, ONNX and IR models (edge.engines.openvino)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

ov = pytest.importorskip("openvino")

from edge.engines.base import Engine  # noqa: E402
from edge.engines.factory import build_engine  # noqa: E402
from edge.engines.openvino import OpenVinoEngine, OpenVinoEngineConfig, write_ir_metadata  # noqa: E402
from edge.errors import EngineError, ModelError  # noqa: E402

TinyModel = Callable[..., Path]
ToTensor = Callable[[np.ndarray], np.ndarray]
Fill = Callable[[np.ndarray, int], None]
Meta = Callable[..., dict[str, str]]
EngineCheck = Callable[[Engine], None]


def ort_reference(path: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])


def save_ir(onnx_path: Path, xml: Path, metadata: dict[str, str] | None = None, strip: bool = False) -> Path:
    model = ov.Core().read_model(str(onnx_path))
    if strip:  # drop what OpenVINO kept from the ONNX metadata
        rt = model.get_rt_info()
        if "framework" in rt:
            del rt["framework"]
    if metadata is not None:
        write_ir_metadata(model, metadata)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


@pytest.mark.parametrize("fuse", [True, False])
def test_real_model(model_path: Path, fuse: bool, pixels_to_tensor: ToTensor, random_input: Fill) -> None:
    """Float input, or uint8 BGR pixels (the default) converted inside the compiled model."""
    cfg = OpenVinoEngineConfig(model=str(model_path), num_threads=2, warmup=1, fuse_preprocess=fuse)
    engine = build_engine(cfg, Path("."))
    as_tensor = pixels_to_tensor if fuse else np.copy
    try:
        assert isinstance(engine, OpenVinoEngine) and isinstance(engine, Engine)
        info = engine.load()
        assert info.names[0] == "open" and info.input_hw == (320, 320) and info.layout == "anchors"
        buf = engine.input_buffer()
        if fuse:
            assert buf.shape == (1, 320, 320, 3) and buf.dtype == np.uint8
        else:
            assert buf.shape == (1, 3, 320, 320) and buf.dtype == np.float32
        random_input(buf, 1)
        out = engine.infer()
        assert out.shape == (1, 10, 2100)
        np.testing.assert_allclose(out, ort_reference(model_path, as_tensor(buf)), rtol=1e-3, atol=2e-3)
        buf[...] = 114 if fuse else 0.5  # the tensor shares the buffer's memory: no re-binding needed
        again = engine.infer()
        assert again is out
        np.testing.assert_allclose(again, ort_reference(model_path, as_tensor(buf)), rtol=1e-3, atol=2e-3)
    finally:
        engine.close()


def test_infer_allocates_nothing(tiny_model: TinyModel, infer_allocates_nothing: EngineCheck) -> None:
    engine = OpenVinoEngineConfig(model=str(tiny_model()), num_threads=1).build(Path("."))
    engine.load()
    for _ in range(300):  # the bindings fill some bounded internal caches over the first ~100 calls
        engine.infer()
    try:
        infer_allocates_nothing(engine)
    finally:
        engine.close()


def test_compile_properties_and_dynamic_batch(
    tiny_model: TinyModel, tmp_path: Path, pixels_to_tensor: ToTensor
) -> None:
    path = tiny_model(batch="N")
    cfg = OpenVinoEngineConfig(
        model=str(path),
        batch=2,
        num_threads=1,
        num_streams=1,
        precision_hint="f32",
        cache_dir=str(tmp_path / "ovcache"),
        warmup=0,
    )
    engine = cfg.build(Path("."))
    assert engine.compile_properties() == {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 1,
        "NUM_STREAMS": 1,
        "CACHE_DIR": str(tmp_path / "ovcache"),
        "INFERENCE_PRECISION_HINT": "f32",
    }
    info = engine.load()
    assert info.batch == 2 and engine.input_buffer().shape == (2, 32, 32, 3)
    engine.input_buffer()[1] = 180
    engine.input_buffer()[1, :, :, 2] = 20  # red differs: the channel swap shows
    out = engine.infer()
    assert out.shape == (2, 7, 1024)
    np.testing.assert_allclose(out[1], ort_reference(path, pixels_to_tensor(engine.input_buffer()[1:2]))[0], atol=1e-4)
    engine.close()


def test_ir_metadata_from_rt_info(
    tiny_model: TinyModel, ultra_metadata: Meta, tmp_path: Path, pixels_to_tensor: ToTensor
) -> None:
    onnx_path = tiny_model(num_classes=2, metadata={})
    md = ultra_metadata(["scratch", "dent"], (32, 32))
    xml = save_ir(onnx_path, tmp_path / "ir" / "quant.xml", metadata=md)
    engine = OpenVinoEngineConfig(model=str(xml), warmup=0).build(Path("."))
    info = engine.load()
    assert info.names == ("scratch", "dent") and info.path == str(xml)
    engine.input_buffer()[...] = 77
    np.testing.assert_allclose(
        engine.infer(), ort_reference(onnx_path, pixels_to_tensor(engine.input_buffer())), atol=1e-4
    )
    engine.close()


def test_ir_keeps_the_reference_input_kind(tiny_model: TinyModel, ultra_metadata: Meta, tmp_path: Path) -> None:
    """An INT8 IR of a golden-reference model is still one (the quantizer copies the metadata)."""
    onnx_path = tiny_model(num_classes=2, metadata={})
    md = {**ultra_metadata(["scratch", "dent"], (32, 32)), "edge_inspect_input": "reference-composite"}
    xml = save_ir(onnx_path, tmp_path / "ir" / "ref.xml", metadata=md, strip=True)
    engine = OpenVinoEngineConfig(model=str(xml), warmup=0).build(Path("."))
    assert engine.load().reference_input is True
    engine.close()


def test_ir_metadata_ultralytics_labels(tiny_model: TinyModel, tmp_path: Path) -> None:
    stripped = save_ir(tiny_model(num_classes=2, metadata={}), tmp_path / "s.xml", strip=True)
    model = ov.Core().read_model(str(stripped))
    model.set_rt_info(["pin_hole", "spur"], ["model_info", "labels"])  # what Ultralytics' export writes
    xml = tmp_path / "u.xml"  # a new file: the read model maps s.bin, overwriting it would crash
    ov.save_model(model, str(xml), compress_to_fp16=False)
    info = OpenVinoEngineConfig(model=str(xml), warmup=0).build(Path(".")).load()
    assert info.names == ("pin_hole", "spur")


def test_ir_metadata_kept_from_onnx_conversion(tiny_model: TinyModel, tmp_path: Path) -> None:
    xml = save_ir(tiny_model(num_classes=3), tmp_path / "conv.xml")  # 'framework' rt_info survives
    assert OpenVinoEngineConfig(model=str(xml), warmup=0).build(Path(".")).load().names == ("c0", "c1", "c2")


def test_ir_metadata_from_sibling_onnx(tiny_model: TinyModel, ultra_metadata: Meta, tmp_path: Path) -> None:
    bare = save_ir(tiny_model(num_classes=2, metadata={}), tmp_path / "m.xml", strip=True)
    assert OpenVinoEngineConfig(model=str(bare), warmup=0).build(Path(".")).load().names == ("class0", "class1")
    shutil.copy(tiny_model(num_classes=2, metadata=ultra_metadata(["a", "b"], (32, 32))), tmp_path / "m.onnx")
    assert OpenVinoEngineConfig(model=str(bare), warmup=0).build(Path(".")).load().names == ("a", "b")
    with pytest.raises(ModelError, match="differ from the configured classes"):
        OpenVinoEngineConfig(model=str(bare), classes=["x", "y"]).build(Path(".")).load()


def test_errors(tmp_path: Path, tiny_model: TinyModel) -> None:
    engine = OpenVinoEngineConfig(model="missing.xml").build(tmp_path)
    with pytest.raises(EngineError, match="not loaded"):
        engine.infer()
    with pytest.raises(ModelError, match="missing.xml"):
        engine.load()
    junk = tmp_path / "junk.xml"
    junk.write_text("<net>not really</net>")
    with pytest.raises(EngineError, match="junk.xml"):
        OpenVinoEngineConfig(model=str(junk)).build(tmp_path).load()
    with pytest.raises(EngineError, match="batch is fixed at 1"):
        OpenVinoEngineConfig(model=str(tiny_model()), batch=3).build(tmp_path).load()
    with pytest.raises(ValidationError):
        OpenVinoEngineConfig(model="m.onnx", performance_hint="FAST")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        OpenVinoEngineConfig(model="m.onnx", precision_hint="int8")  # type: ignore[arg-type]


def test_precision_defaults_to_f32_on_cpu_only() -> None:
    """On AMX CPUs OpenVINO would run an FP32 model in bf16 and move scores past calibration."""

    def props(**kw: object) -> dict[str, object]:
        return OpenVinoEngineConfig(model="m.onnx", **kw).build(Path(".")).compile_properties()  # type: ignore[arg-type]

    assert props()["INFERENCE_PRECISION_HINT"] == "f32"
    assert props(precision_hint="bf16")["INFERENCE_PRECISION_HINT"] == "bf16"
    assert "INFERENCE_PRECISION_HINT" not in props(precision_hint="device")
    assert "INFERENCE_PRECISION_HINT" not in props(device="GPU")
