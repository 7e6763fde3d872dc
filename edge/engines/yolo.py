"""Shared YOLO post-processing: decode the raw output, NMS, boxes back to camera pixels.

Pure numpy, no I/O, the same for every runtime. The maths follows Ultralytics
(`non_max_suppression`, `scale_boxes`) so that detections agree with `YOLO(model).predict(...)`
on the same model and image; the letterbox that comes before is `edge.engines.letterbox`.

Hot-path rules: `decode` reuses a `DecodeScratch` for the per-anchor work and allocates only
arrays sized by the candidate set (anchors above the confidence threshold; NMS's IoU matrix is
n x n for up to `NMS_MATRIX_MAX` of them).
"""

from __future__ import annotations

import numpy as np

from edge.engines.base import Layout, ModelInfo
from edge.engines.detections import Detections
from edge.engines.letterbox import LetterboxGeometry
from edge.errors import ModelError

MAX_WH = 7680  # per-class box offset for class-aware NMS (Ultralytics `max_wh`)
MAX_NMS = 30000  # most candidates that enter NMS (Ultralytics `max_nms`)


# --------------------------------------------------------------------------------------------
# NMS and decoding
# --------------------------------------------------------------------------------------------


NMS_MATRIX_MAX = 1024  # up to this many candidates, NMS works from one pairwise IoU matrix


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, by descending score (torchvision semantics).

    A box is dropped when its IoU with a higher-scoring kept box is > `iou_threshold` (an
    undefined IoU, two empty boxes, drops nothing). Up to `NMS_MATRIX_MAX` candidates the IoUs
    are computed at once as a matrix and the greedy pass only reads its rows; beyond that the
    loop runs once per *kept* box, each step vectorised over the remaining ones.
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros((0,), np.int64)
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(n, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    if n <= NMS_MATRIX_MAX:
        return _nms_matrix(boxes[order], iou_threshold, order)
    return _nms_loop(boxes, order, iou_threshold)


def _nms_matrix(sorted_boxes: np.ndarray, iou_threshold: float, order: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (sorted_boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    w = np.minimum(x2[:, None], x2[None, :])
    w -= np.maximum(x1[:, None], x1[None, :])
    h = np.minimum(y2[:, None], y2[None, :])
    h -= np.maximum(y1[:, None], y1[None, :])
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    inter = np.multiply(w, h, out=w)
    union = areas[:, None] + areas[None, :]
    union -= inter
    with np.errstate(invalid="ignore", divide="ignore"):
        over = np.divide(inter, union, out=h) > np.float32(iou_threshold)
    n = int(order.shape[0])
    removed = np.zeros((n,), np.bool_)
    keep: list[int] = []
    for i in range(n):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return order[np.array(keep, np.int64)]


def _nms_loop(boxes: np.ndarray, order: np.ndarray, iou_threshold: float) -> np.ndarray:
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = np.empty((int(order.shape[0]),), np.int64)
    k = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        while order.size:
            i = order[0]
            keep[k] = i
            k += 1
            rest = order[1:]
            if rest.size == 0:
                break
            w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
            h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
            np.maximum(w, 0, out=w)
            np.maximum(h, 0, out=h)
            inter = w * h
            iou = inter / (areas[i] + areas[rest] - inter)
            order = rest[~(iou > iou_threshold)]
    return keep[:k]


class DecodeScratch:
    """Preallocated per-anchor arrays for `decode` of an `anchors` output (N anchors, nc classes)."""

    __slots__ = ("num_anchors", "num_classes", "best", "mask")

    def __init__(self, num_anchors: int, num_classes: int) -> None:
        self.num_anchors = int(num_anchors)
        self.num_classes = int(num_classes)
        self.best = np.empty((self.num_anchors,), np.float32)
        self.mask = np.empty((self.num_anchors,), np.bool_)

    @classmethod
    def for_output(cls, output_shape: tuple[int, ...], num_classes: int) -> DecodeScratch:
        """Scratch for an `anchors` output shaped (B, 4+nc, N)."""
        return cls(int(output_shape[-1]), num_classes)


def single_prediction(raw: np.ndarray) -> np.ndarray:
    """The rank-2 prediction of a one-item raw output: (1, R, N) -> (R, N); (R, N) as it is."""
    if raw.ndim == 3:
        if raw.shape[0] != 1:
            raise ValueError(f"decode takes one batch item; got output shaped {raw.shape}")
        return raw[0]
    if raw.ndim != 2:
        raise ModelError(f"model output must be rank 2 or 3, got shape {raw.shape}")
    return raw


def decode(
    raw: np.ndarray,
    *,
    layout: Layout,
    num_classes: int,
    conf: float,
    iou: float,
    geometry: LetterboxGeometry,
    max_det: int = 300,
    scratch: DecodeScratch | None = None,
    agnostic: bool = False,
) -> Detections:
    """Raw output of one batch item -> detections in source (camera) pixels, by descending score.

    `anchors`: (1, 4+nc, N) of cx, cy, w, h (input pixels) and class scores (no objectness);
    a candidate is an anchor whose best class score is > `conf`; class-aware NMS at `iou`.
    `end2end`: (1, K, 6) of x1, y1, x2, y2, score, class, already NMS-free; kept if score > conf.
    At most `max_det` detections either way.
    """
    pred = single_prediction(raw)
    if layout == "end2end":
        return _decode_end2end(pred, conf, geometry, max_det)
    if layout != "anchors":
        raise ValueError(f"unknown output layout {layout!r}")
    if pred.shape[0] != 4 + num_classes:
        raise ModelError(f"output has {pred.shape[0]} rows, expected 4 + {num_classes} classes (shape {raw.shape})")
    n = int(pred.shape[1])
    if scratch is None:
        scratch = DecodeScratch(n, num_classes)
    elif scratch.num_anchors != n or scratch.num_classes != num_classes:
        raise ValueError(
            f"scratch is for {scratch.num_anchors} anchors x {scratch.num_classes} classes, "
            f"output has {n} x {num_classes}"
        )
    cls_scores = pred[4:]
    np.max(cls_scores, axis=0, out=scratch.best)
    np.greater(scratch.best, conf, out=scratch.mask)
    idx = np.flatnonzero(scratch.mask)
    if idx.size == 0:
        return Detections.empty()
    scores = scratch.best[idx]
    # argmax over the candidates only: a reduction across rows of the whole output is slow.
    classes = np.argmax(cls_scores[:, idx], axis=0).astype(np.int32)
    if idx.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        idx, scores, classes = idx[top], scores[top], classes[top]
    xywh = pred[:4, idx].astype(np.float32).T  # (n, 4) cx, cy, w, h
    half = xywh[:, 2:] / np.float32(2)
    boxes = np.empty((idx.size, 4), np.float32)
    np.subtract(xywh[:, :2], half, out=boxes[:, :2])
    np.add(xywh[:, :2], half, out=boxes[:, 2:])
    if agnostic:
        keep = nms(boxes, scores, iou)
    else:
        offset = (classes.astype(np.float32) * np.float32(MAX_WH))[:, None]
        keep = nms(boxes + offset, scores, iou)
    keep = keep[:max_det]
    return Detections(geometry.to_source(boxes[keep]), scores[keep], classes[keep])


def _decode_end2end(pred: np.ndarray, conf: float, geometry: LetterboxGeometry, max_det: int) -> Detections:
    if pred.shape[-1] != 6:
        raise ModelError(f"end2end output must be (1, K, 6), got rows of {pred.shape[-1]}")
    idx = np.flatnonzero(pred[:, 4] > conf)[:max_det]
    if idx.size == 0:
        return Detections.empty()
    sel = pred[idx].astype(np.float32)
    order = np.argsort(-sel[:, 4], kind="stable")
    sel = sel[order]
    boxes = np.ascontiguousarray(sel[:, :4])
    return Detections(geometry.to_source(boxes), sel[:, 4].copy(), sel[:, 5].astype(np.int32))


class Decoder:
    """`decode` bound to a model and thresholds, with its scratch preallocated."""

    def __init__(
        self,
        info: ModelInfo,
        *,
        conf: float,
        iou: float,
        max_det: int = 300,
        output_shape: tuple[int, ...] | None = None,
        agnostic: bool = False,
    ) -> None:
        self.layout: Layout = info.layout
        self.num_classes = info.num_classes
        self.conf = conf
        self.iou = iou
        self.max_det = max_det
        self.agnostic = agnostic
        self._scratch: DecodeScratch | None = None
        if self.layout == "anchors" and output_shape is not None:
            self._scratch = DecodeScratch.for_output(output_shape, self.num_classes)

    def __call__(self, raw: np.ndarray, geometry: LetterboxGeometry) -> Detections:
        if self.layout == "anchors":
            n = int(raw.shape[-1])
            if self._scratch is None or self._scratch.num_anchors != n:
                self._scratch = DecodeScratch(n, self.num_classes)
        return decode(
            raw,
            layout=self.layout,
            num_classes=self.num_classes,
            conf=self.conf,
            iou=self.iou,
            geometry=geometry,
            max_det=self.max_det,
            scratch=self._scratch,
            agnostic=self.agnostic,
        )
