"""Evaluation-side glue over the shared engine code (`edge.engines.*`).

The engine, the letterbox and the service's decode are the shared ones. Two things evaluation
needs that the service does not:
- `decode_multilabel`: a candidate per (anchor, class) above conf, as `yolo val` decodes
  (Ultralytics `non_max_suppression(multi_label=True)`), so that our mAP equals theirs; the
  service's `edge.engines.yolo.decode` keeps the best class per anchor only;
- `class_max_scores`: the per-class highest score of the service's single-label decode,
  straight from the raw output (no NMS or conf cut can change it), for part-level metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from edge.engines.base import Engine, Layout, ModelInfo
from edge.engines.detections import Detections
from edge.engines.letterbox import LetterboxGeometry
from edge.engines.yolo import MAX_NMS, MAX_WH, single_prediction
from edge.errors import ModelError


def open_engine(model: Path, threads: int | None = None) -> tuple[Engine, ModelInfo]:
    """Load `model` with onnxruntime on CPU (batch 1, no warm-up) through the shared engine."""
    from edge.engines.onnxruntime import OnnxRuntimeEngineConfig

    config = OnnxRuntimeEngineConfig.model_validate(
        {
            "type": "onnxruntime",
            "model": str(Path(model).resolve()),
            "providers": ["CPUExecutionProvider"],
            "intra_op_threads": threads,
            "warmup": 0,
        }
    )
    engine = config.build(Path.cwd())
    return engine, engine.load()


def _anchors(raw: np.ndarray, num_classes: int) -> np.ndarray:
    pred = single_prediction(raw)
    if pred.shape[0] != 4 + num_classes:
        raise ModelError(f"output shaped {raw.shape} does not fit 4 + {num_classes} classes")
    return pred


def decode_multilabel(
    raw: np.ndarray,
    *,
    layout: Layout,
    num_classes: int,
    conf: float,
    iou: float,
    geometry: LetterboxGeometry,
    max_det: int = 300,
) -> Detections:
    """Like `edge.engines.yolo.decode`, but every class score > conf of an anchor is a candidate."""
    if layout == "end2end":  # NMS-free output has one class per row already
        from edge.engines.yolo import decode

        return decode(
            raw, layout=layout, num_classes=num_classes, conf=conf, iou=iou, geometry=geometry, max_det=max_det
        )
    pred = _anchors(raw, num_classes)
    anchor, cls = np.nonzero(pred[4:].T > conf)
    if anchor.size == 0:
        return Detections.empty()
    scores = pred[4 + cls, anchor].astype(np.float32)
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    anchor, cls, scores = anchor[order], cls[order], scores[order]
    cx, cy, w, h = (pred[k, anchor].astype(np.float32) for k in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep = _class_nms(boxes, scores, cls, iou)[:max_det]
    return Detections(geometry.to_source(boxes[keep]), scores[keep], cls[keep].astype(np.int32))


def _class_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Class-aware greedy NMS (torchvision semantics: IoU > iou suppresses), by descending score.

    OpenCV's C++ NMS on class-offset boxes: the multi-label candidate sets at conf 0.001 run to
    thousands of boxes, too many for a Python-level loop per kept box.
    """
    offset = (classes.astype(np.float64) * MAX_WH)[:, None]
    b = boxes.astype(np.float64) + offset
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    kept = cv2.dnn.NMSBoxes(cast(Any, xywh), cast(Any, scores.astype(np.float32)), 0.0, float(iou))
    keep = np.asarray(kept, np.int64)
    keep = keep.reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")]


def class_max_scores(raw: np.ndarray, *, layout: Layout, num_classes: int) -> np.ndarray:
    """(num_classes,) highest score per class of the single-label decode, 0 where a class never wins."""
    out = np.zeros(num_classes, np.float32)
    if layout == "end2end":
        rows = single_prediction(raw).reshape(-1, 6)
        cls = rows[:, 5].astype(np.int64)
        ok = (cls >= 0) & (cls < num_classes)
        np.maximum.at(out, cls[ok], rows[ok, 4].astype(np.float32))
        return out
    scores = _anchors(raw, num_classes)[4:]
    np.maximum.at(out, scores.argmax(axis=0), scores.max(axis=0).astype(np.float32))
    return out
