"""ONNX Runtime and OpenVINO agree on real PCB images through Preprocessor -> infer -> decode."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from edge.engines.base import EngineConfigBase
from edge.engines.letterbox import Preprocessor
from edge.engines.onnxruntime import OnnxRuntimeEngineConfig
from edge.engines.openvino import OpenVinoEngineConfig
from edge.engines.yolo import Decoder
from edge.verdict import Detections

CONF = 0.001  # low on purpose: many detections to compare, whatever the shipped model's training
IOU = 0.7


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 1.0


def unmatched(a: Detections, b: Detections, conf: float) -> list[str]:
    """Detections of `a` with no same-class box in `b` at IoU >= 0.99 and score within 1e-3.

    Only a detection whose score is within 1e-3 of the threshold may be missing on the other
    side (it can fall either way of `conf`).
    """
    problems = []
    used: set[int] = set()
    for i in range(len(a)):
        found = False
        for j in range(len(b)):
            if j in used or b.classes[j] != a.classes[i]:
                continue
            if abs(float(b.scores[j]) - float(a.scores[i])) <= 1e-3 and box_iou(a.boxes[i], b.boxes[j]) >= 0.99:
                used.add(j)
                found = True
                break
        if not found and float(a.scores[i]) - conf > 1e-3:
            problems.append(f"cls {a.classes[i]} score {a.scores[i]:.5f} box {a.boxes[i].round(1).tolist()}")
    return problems


def run(cfg: EngineConfigBase, frames: list[np.ndarray]) -> list[Detections]:
    engine = cfg.build(Path("."))  # type: ignore[attr-defined]
    info = engine.load()
    try:
        pre = Preprocessor(engine.input_buffer()[0])
        dec = Decoder(info, conf=CONF, iou=IOU, output_shape=engine.output_shape())
        out = []
        for frame in frames:
            geometry = pre(frame)
            out.append(dec(engine.infer(), geometry))
        return out
    finally:
        engine.close()


def test_onnxruntime_and_openvino_agree(model_path: Path, pcb_test_images: list[Path]) -> None:
    frames = []
    for p in pcb_test_images:
        frame = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert frame is not None, p
        frames.append(frame)
    frames.append(cv2.cvtColor(frames[0][40:600, :], cv2.COLOR_GRAY2BGR))  # non-square BGR
    common = {"model": str(model_path), "confidence": CONF, "iou": IOU, "warmup": 0}
    ort = run(OnnxRuntimeEngineConfig(**common, intra_op_threads=2), frames)
    ov = run(OpenVinoEngineConfig(**common, num_threads=2), frames)
    total = 0
    names = [p.name for p in pcb_test_images] + ["crop-bgr"]
    for name, frame, a, b in zip(names, frames, ort, ov, strict=True):
        total += len(a)
        assert abs(len(a) - len(b)) <= max(2, len(a) // 50), f"{name}: {len(a)} vs {len(b)} detections"
        assert not unmatched(a, b, CONF), f"{name}: onnxruntime only: {unmatched(a, b, CONF)[:5]}"
        assert not unmatched(b, a, CONF), f"{name}: openvino only: {unmatched(b, a, CONF)[:5]}"
        h, w = frame.shape[:2]
        assert (a.boxes >= 0).all() and (a.boxes[:, 0::2] <= w).all() and (a.boxes[:, 1::2] <= h).all()
    assert total > 0, "no detections at all: the comparison would be vacuous"
