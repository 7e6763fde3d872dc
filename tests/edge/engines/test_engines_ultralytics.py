"""The Ultralytics reference engine (edge.engines.ultralytics) and its parity with ours."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edge.engines.ultralytics import UltralyticsEngineConfig
from edge.errors import EngineError, EngineUnavailableError

EngineWithout = Callable[[dict[str, Any], Sequence[str], str], None]


def test_module_imports_without_ultralytics_or_torch(engine_without_modules: EngineWithout, model_path: Path) -> None:
    """Without Ultralytics and torch the module imports and its engine builds; `load()` says what
    is missing (in a fresh interpreter where importing them fails)."""
    section = {"type": "ultralytics", "model": str(model_path)}
    engine_without_modules(section, ["ultralytics", "torch", "torchvision"], "ultralytics is not installed")


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


REPO = Path(__file__).resolve().parents[3]


def load_make_golden() -> ModuleType:
    """scripts/make_golden.py: the golden frame recipes and the detection matching rules."""
    spec = importlib.util.spec_from_file_location("make_golden_script", REPO / "scripts" / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parity_frames(make_golden: ModuleType) -> list[tuple[str, np.ndarray]]:
    """The golden recipe frames (crops, colour, scale-up, white) and a few more bundled images."""
    import cv2

    frames = [(r["name"], make_golden.make_frame(r, REPO)) for r in make_golden.RECIPES]
    for path in sorted((REPO / "edge" / "demo_data" / "images").glob("*_test.jpg"))[1::7]:
        frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert frame is not None, path
        frames.append((path.name, frame))
    return frames


def reference_frames() -> list[tuple[str, np.ndarray]]:
    """Golden-reference composites (part, reference, difference) of every 7th defective demo board."""
    import cv2

    from edge.reference import compose

    demo = REPO / "edge" / "demo_data"
    frames = []
    for path in sorted((demo / "images").glob("*_test.jpg"))[::7]:
        part = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        ref = cv2.imread(str(demo / "references" / f"{path.stem.removesuffix('_test')}.jpg"), cv2.IMREAD_GRAYSCALE)
        assert part is not None and ref is not None, path
        frames.append((path.name, compose(part, ref).copy()))
    return frames


@pytest.mark.parity
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    "model_name",
    ["pcb-yolo11n-320.onnx", "pcb-yolo11n-relu-320.onnx", "pcb-ref-yolo11n-320.onnx", "pcb-ref-yolo11n-relu-320.onnx"],
)
def test_parity_with_our_pipeline(runtime: str, model_name: str, model_path: Path) -> None:
    """Opt-in (-m parity, needs the train extra): live Ultralytics predict == Preprocessor/engine/decode.

    Same frames as the golden file plus a few more, at a low and the default confidence, on
    each installed CPU runtime, for both frame-only models (SiLU and ReLU) and, on composites of
    demo boards with their references, both golden-reference models; Ultralytics itself runs
    the ONNX model with ONNX Runtime.
    """
    model_path = model_path.with_name(model_name)
    reference = model_name.startswith("pcb-ref-")
    pytest.importorskip("ultralytics")
    pytest.importorskip(runtime)
    from edge.engines.letterbox import Preprocessor
    from edge.engines.onnxruntime import OnnxRuntimeEngineConfig
    from edge.engines.openvino import OpenVinoEngineConfig
    from edge.engines.yolo import Decoder

    mg = load_make_golden()
    iou = 0.7
    ours_cfg = (
        OnnxRuntimeEngineConfig(model=str(model_path), warmup=0, intra_op_threads=2)
        if runtime == "onnxruntime"
        else OpenVinoEngineConfig(model=str(model_path), warmup=0, num_threads=2)
    )
    ours = ours_cfg.build(Path("."))
    info = ours.load()
    pre = Preprocessor(ours.input_buffer()[0])
    problems: list[str] = []
    compared = 0
    for conf in (0.001, 0.25):
        ref = UltralyticsEngineConfig(model=str(model_path), confidence=conf, iou=iou, warmup=0).build(Path("."))
        ref.load()
        dec = Decoder(info, conf=conf, iou=iou)
        for name, frame in reference_frames() if reference else parity_frames(mg):
            a = ref.predict(frame)
            geometry = pre(frame)
            b = dec(ours.infer(), geometry)
            compared += len(a)
            golden = {"boxes": a.boxes.tolist(), "confidences": a.scores.tolist(), "classes": a.classes.tolist()}
            problems += [f"{name} @ conf {conf}: {p}" for p in mg.compare(golden, b.boxes, b.scores, b.classes, conf)]
        ref.close()
    ours.close()
    assert not problems, f"{runtime} differs from live Ultralytics predict:\n" + "\n".join(problems[:20])
    assert compared > 0


@pytest.mark.parity
def test_golden_file_is_current(model_path: Path) -> None:
    """Opt-in: the stored golden outputs are what the installed Ultralytics predicts now."""
    pytest.importorskip("ultralytics")
    import json

    mg = load_make_golden()
    stored = json.loads(Path(mg.DEFAULT_OUT).read_text())
    if stored["model_id"] != mg.model_id_of(model_path):
        pytest.fail("the golden file is for another model: run scripts/make_golden.py", pytrace=False)
    live = mg.predict_all(model_path, mg.RECIPES)
    problems = []
    for old, new in zip(stored["images"], live["images"], strict=True):
        assert old["pixels_sha256"] == new["pixels_sha256"], old["name"]
        for key, res in new["results"].items():
            conf = float(key)
            boxes, scores, classes = (np.asarray(res[k]) for k in ("boxes", "confidences", "classes"))
            problems += [
                f"{old['name']} @ {key}: {p}" for p in mg.compare(old["results"][key], boxes, scores, classes, conf)
            ]
    assert not problems, (
        f"Ultralytics {live['ultralytics']} predicts differently from the golden file "
        f"(made with {stored['ultralytics']}):\n" + "\n".join(problems[:20])
    )
