"""The shipped golden-reference model: it describes itself, is calibrated, finds real defects
against each board's reference and passes boards whose defects were repaired."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.engines.letterbox import Preprocessor
from edge.engines.model import model_id_of, read_model_info
from edge.engines.onnxruntime import OnnxRuntimeEngineConfig
from edge.engines.yolo import Decoder
from edge.reference import compose, paste_reference
from edge.thresholds import load_thresholds, sidecar_path
from edge.training.dataset import DEEPPCB_CLASSES
from edge.training.evaluate import read_labels
from edge.training.partmetrics import box_iou


def truth(label: Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(xyxy pixel boxes, classes) of a demo board's YOLO label."""
    return read_labels(label, image.shape[1], image.shape[0], len(DEEPPCB_CLASSES))


@pytest.fixture(scope="module")
def boards(demo_images: Path, demo_references: Path, demo_labels: Path) -> list[tuple[np.ndarray, np.ndarray, Path]]:
    """(board under test, its reference, its label file) for every defective demo board."""
    out = []
    for image in sorted(demo_images.glob("*_test.jpg")):
        board = image.stem.removesuffix("_test")
        test = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
        ref = cv2.imread(str(demo_references / f"{board}.jpg"), cv2.IMREAD_GRAYSCALE)
        out.append((test, ref, demo_labels / f"{image.stem}.txt"))
    assert len(out) == 30
    return out


VariantOf = Callable[[Path, str, str], Path]
CheckActivations = Callable[[Path, bool], None]
RELU_REFERENCE_MODEL = "pcb-ref-yolo11n-relu-320.onnx"


@pytest.fixture(params=["silu", "relu"])
def ref_model(request: pytest.FixtureRequest, reference_model_path: Path, variant_of: VariantOf) -> Path:
    """The golden-reference model (the `reference_model_path` fixture) and its ReLU variant beside it."""
    return variant_of(reference_model_path, request.param, RELU_REFERENCE_MODEL)


def test_activations(ref_model: Path, check_activations: CheckActivations) -> None:
    """The ReLU variant has no SiLU left (the point of it: CPU INT8 speed); the other only SiLU."""
    check_activations(ref_model, ref_model.name == RELU_REFERENCE_MODEL)


def test_model_is_small_and_describes_itself(ref_model: Path) -> None:
    reference_model_path = ref_model
    assert reference_model_path.stat().st_size <= 15 * 1024 * 1024
    info = read_model_info(reference_model_path)
    assert info.reference_input and info.names == DEEPPCB_CLASSES and info.channels == 3
    card = reference_model_path.with_suffix(".md")
    assert card.is_file() and info.model_id in card.read_text()
    th = load_thresholds(sidecar_path(reference_model_path), reference_model_path)
    assert th.model_id == model_id_of(reference_model_path) and set(th.thresholds) == set(DEEPPCB_CLASSES)


def test_finds_labelled_defects_against_the_reference(
    ref_model: Path, boards: list[tuple[np.ndarray, np.ndarray, Path]]
) -> None:
    reference_model_path = ref_model
    engine = OnnxRuntimeEngineConfig(model=str(reference_model_path)).build(Path("."))
    info = engine.load()
    pre = Preprocessor(engine.input_buffer()[0])
    decode = Decoder(info, conf=0.25, iou=0.7)
    found = total = boards_hit = 0
    for test, ref, label in boards:
        boxes, classes = truth(label, test)
        geometry = pre(compose(test, ref))
        dets = decode(engine.infer(), geometry)
        overlap = box_iou(boxes, dets.boxes)  # (labelled, detected)
        same_class = classes[:, None] == dets.classes[None, :]
        hits = int(np.count_nonzero(np.any(same_class & (overlap >= 0.5), axis=1)))
        found, total, boards_hit = found + hits, total + len(classes), boards_hit + (hits > 0)
    engine.close()
    # every board shows its defects: right class, right place (box IoU >= 0.5)
    assert boards_hit == len(boards)
    assert found / total >= 0.85, f"found {found} of {total} labelled defects"


def test_repaired_boards_pass_and_defective_ones_are_rejected(
    ref_model: Path, boards: list[tuple[np.ndarray, np.ndarray, Path]]
) -> None:
    """At the calibrated thresholds: each defective board rejected; the same board with its
    defect boxes pasted over from the reference (a good part with the capture's noise) passes."""
    reference_model_path = ref_model
    engine = OnnxRuntimeEngineConfig(model=str(reference_model_path)).build(Path("."))
    info = engine.load()
    pre = Preprocessor(engine.input_buffer()[0])
    th = load_thresholds(sidecar_path(reference_model_path), reference_model_path)
    vec = np.array([th.thresholds[n] for n in info.names])
    decode = Decoder(info, conf=float(vec.min()), iou=0.7)

    def rejected(part: np.ndarray, ref: np.ndarray) -> bool:
        geometry = pre(compose(part, ref))
        dets = decode(engine.infer(), geometry)
        return bool(np.any(dets.scores >= vec[dets.classes]))

    defective_rejected = good_rejected = 0
    for test, ref, label in boards:
        defective_rejected += rejected(test, ref)
        repaired = test.copy()
        paste_reference(repaired, ref, truth(label, test)[0])  # as `dataset convert --reference` does
        good_rejected += rejected(repaired, ref)
    engine.close()
    assert defective_rejected == len(boards)
    assert good_rejected <= 1, f"{good_rejected} of {len(boards)} repaired boards rejected"
