"""Parity with Ultralytics without torch: our full path against stored `YOLO.predict` outputs.

`scripts/make_golden.py` (run where ultralytics is installed) stores what Ultralytics predicts on
the shipped model for a dozen frames (whole, cropped to non-square, tinted BGR, scaled up, all
white) at conf 0.25 and 0.05; this test rebuilds the same frames with the script's own recipe
code and runs Preprocessor -> engine.infer() -> decode on every installed CPU runtime. The same
for the golden-reference model (the demo's default, `make_golden.py --reference`): there the test
composes each part with its reference with the service's own `edge.reference.compose`, checks it
is the composite Ultralytics saw, and letterboxes it as the inspector does. A golden file made for
another model fails the test: regenerate it rather than compare against stale data.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edge.engines.base import EngineConfigBase
from edge.engines.letterbox import Preprocessor
from edge.engines.model import model_id_of
from edge.engines.yolo import Decoder

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "make_golden.py"
GOLDEN = REPO / "tests" / "data" / "golden" / "ultralytics-predict.json"
GOLDEN_REF = REPO / "tests" / "data" / "golden" / "ultralytics-predict-ref.json"
THREADS = 2
KINDS = ("frame", "reference")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_golden_script", SCRIPT)
    assert spec is not None and spec.loader is not None, SCRIPT
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def make_golden() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module", params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def golden(kind: str) -> dict[str, Any]:
    path = GOLDEN_REF if kind == "reference" else GOLDEN
    if not path.is_file():
        flag = " --reference" if kind == "reference" else ""
        pytest.fail(f"{path} is missing: run scripts/make_golden.py{flag} (with a venv that has ultralytics)")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@pytest.fixture(scope="module")
def shipped(kind: str, model_path: Path, reference_model_path: Path) -> Path:
    return reference_model_path if kind == "reference" else model_path


def current_golden(golden: dict[str, Any], model_path: Path) -> dict[str, Any]:
    """The golden document, after failing the test if it was made for another model."""
    shipped = model_id_of(model_path)
    if golden.get("model_id") != shipped:
        pytest.fail(
            f"golden outputs are for model {golden.get('model_id')}, the shipped model {model_path.name} is "
            f"{shipped}: run scripts/make_golden.py (e.g. YOLO_OFFLINE=1 .venv-train/bin/python "
            f"scripts/make_golden.py{' --reference' if 'ref' in model_path.name else ''})",
            pytrace=False,
        )
    return golden


def engine_config(runtime: str, model: Path) -> EngineConfigBase:
    common: dict[str, Any] = {"model": str(model), "warmup": 0}
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
        from edge.engines.onnxruntime import OnnxRuntimeEngineConfig

        return OnnxRuntimeEngineConfig(**common, providers=["CPUExecutionProvider"], intra_op_threads=THREADS)
    pytest.importorskip("openvino")
    from edge.engines.openvino import OpenVinoEngineConfig

    return OpenVinoEngineConfig(**common, device="CPU", num_threads=THREADS)


def test_golden_is_for_the_shipped_model(kind: str, golden: dict[str, Any], shipped: Path) -> None:
    doc = current_golden(golden, shipped)
    confs = doc["predict"]["confidences"]
    assert len(doc["images"]) >= 10 and len(confs) >= 2
    total = sum(len(im["results"][k]["classes"]) for im in doc["images"] for k in im["results"])
    assert total > 0, "the golden file holds no detections at all: the comparison would be vacuous"
    assert any(im["recipe"].get("crop") for im in doc["images"]), "no non-square frame in the golden set"
    if kind == "reference":
        assert any("_good" in im["recipe"]["source"] for im in doc["images"]), "no second capture of a good part"
        self_pair = next(im for im in doc["images"] if im["recipe"]["source"] == im["recipe"]["reference"])
        assert not any(self_pair["results"][k]["classes"] for k in self_pair["results"])  # no difference: nothing
    else:
        assert any(im["recipe"].get("color") != "gray" for im in doc["images"]), "no colour frame in the golden set"


def test_golden_recipes_match_the_script(kind: str, golden: dict[str, Any], make_golden: ModuleType) -> None:
    """The stored recipes are the script's: a changed recipe list means the golden file is stale."""
    recipes = make_golden.REFERENCE_RECIPES if kind == "reference" else make_golden.RECIPES
    assert [im["recipe"] for im in golden["images"]] == recipes, (
        "scripts/make_golden.py's recipes changed since the golden file was written: run scripts/make_golden.py"
    )


def golden_frame(kind: str, recipe: dict[str, Any], make_golden: ModuleType) -> Any:
    """The frame our path letterboxes: the recipe's frame, or for the golden-reference model the
    part composed with its reference by the service's own function."""
    if kind != "reference":
        return make_golden.make_frame(recipe, REPO)
    from edge.reference import compose

    part, reference = make_golden.read_pair(recipe, REPO)
    return compose(part, reference)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_full_path_matches_ultralytics_golden(
    runtime: str, kind: str, golden: dict[str, Any], shipped: Path, make_golden: ModuleType
) -> None:
    doc = current_golden(golden, shipped)
    cfg = engine_config(runtime, shipped)
    engine = cfg.build(Path("."))  # type: ignore[attr-defined]
    info = engine.load()
    iou = float(doc["predict"]["iou"])
    max_det = int(doc["predict"].get("max_det", 300))
    try:
        pre = Preprocessor(engine.input_buffer()[0])
        decoders = {
            make_golden.conf_key(c): (float(c), Decoder(info, conf=float(c), iou=iou, max_det=max_det))
            for c in doc["predict"]["confidences"]
        }
        problems: list[str] = []
        compared = 0
        for image in doc["images"]:
            frame = golden_frame(kind, image["recipe"], make_golden)
            assert make_golden.pixels_sha256(frame) == image["pixels_sha256"], (
                f"{image['name']}: the rebuilt frame differs from the one Ultralytics saw "
                f"(shape {frame.shape} vs {image['shape']}; a different JPEG decoder?)"
            )
            geometry = pre(frame)
            raw = engine.infer()
            for key, (conf, decoder) in decoders.items():
                dets = decoder(raw, geometry)
                expected = image["results"][key]
                compared += len(expected["classes"])
                for p in make_golden.compare(expected, dets.boxes, dets.scores, dets.classes, conf):
                    problems.append(f"{image['name']} @ conf {key}: {p}")
    finally:
        engine.close()
    assert not problems, f"{runtime} differs from Ultralytics predict:\n" + "\n".join(problems[:20])
    assert compared > 0


def test_compare_rules(make_golden: ModuleType) -> None:
    """The matching rules themselves: class, IoU, confidence, and the threshold band."""
    import numpy as np

    g = {"boxes": [[10, 10, 50, 50], [100, 100, 140, 160]], "confidences": [0.9, 0.2505], "classes": [1, 2]}
    boxes = np.array([[10.05, 10, 50, 50.02]], np.float32)
    same = make_golden.compare(g, boxes, np.array([0.9004]), np.array([1]), 0.25)
    assert same == []  # the second golden box is within 1e-3 of conf: may be missing
    assert make_golden.compare(g, boxes, np.array([0.9004]), np.array([0]), 0.25)  # wrong class
    assert make_golden.compare(g, boxes, np.array([0.902]), np.array([1]), 0.25)  # confidence off
    shifted = np.array([[12, 10, 52, 50]], np.float32)
    assert make_golden.compare(g, shifted, np.array([0.9]), np.array([1]), 0.25)  # IoU < 0.99
    extra = np.array([[10, 10, 50, 50], [200, 200, 240, 240]], np.float32)
    out = make_golden.compare(g, extra, np.array([0.9, 0.5]), np.array([1, 3]), 0.25)
    assert len(out) == 1 and out[0].startswith("extra")
