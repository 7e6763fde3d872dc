"""The Ultralytics reference engine (edge.engines.ultralytics) and its parity with ours."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.engines.ultralytics import UltralyticsEngineConfig
from edge.errors import EngineError, EngineUnavailableError


def test_module_imports_without_ultralytics_or_torch() -> None:
    assert "edge.engines.ultralytics" in sys.modules
    assert "ultralytics" not in sys.modules or importlib.util.find_spec("ultralytics") is not None


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed")
def test_load_without_ultralytics(model_path: Path) -> None:
    engine = UltralyticsEngineConfig(model=str(model_path)).build(Path("."))
    with pytest.raises(EngineUnavailableError, match="ultralytics is not installed"):
        engine.load()


def test_raw_protocol_is_refused(model_path: Path) -> None:
    engine = UltralyticsEngineConfig(model=str(model_path)).build(Path("."))
    with pytest.raises(EngineError, match="predict"):
        engine.infer()
    with pytest.raises(EngineError, match="predict"):
        engine.input_buffer()
    with pytest.raises(EngineError, match="not loaded"):
        engine.predict(np.zeros((64, 64), np.uint8))


@pytest.mark.parity
def test_parity_with_onnxruntime_pipeline(model_path: Path, pcb_test_images: list[Path]) -> None:
    """Opt-in (-m parity, needs the train extra): Ultralytics predict == Preprocessor/ORT/decode."""
    pytest.importorskip("ultralytics")
    import cv2

    from edge.engines.onnxruntime import OnnxRuntimeEngineConfig
    from edge.engines.yolo import Decoder, Preprocessor

    conf, iou = 0.001, 0.7
    ref = UltralyticsEngineConfig(model=str(model_path), confidence=conf, iou=iou, warmup=0).build(Path("."))
    ref.load()
    ours = OnnxRuntimeEngineConfig(model=str(model_path), warmup=0).build(Path("."))
    info = ours.load()
    pre, dec = Preprocessor(ours.input_buffer()[0]), Decoder(info, conf=conf, iou=iou)
    for path in pcb_test_images:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        a = ref.predict(frame)
        geometry = pre(frame)
        b = dec(ours.infer(), geometry)
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_array_equal(a.classes, b.classes)
