"""Shared YOLO pre- and post-processing: letterbox into the engine's tensor, decode, NMS.

Pure numpy/OpenCV, no I/O, the same for every runtime. The maths follows Ultralytics
(`LetterBox(auto=False, scaleup=True, center=True)`, `non_max_suppression`, `scale_boxes`) so
that detections agree with `YOLO(model).predict(...)` on the same model and image.

Hot-path rules: `Preprocessor.__call__` allocates nothing in steady state (geometry, padding
and resize scratch are prepared once per source size); `decode` reuses a `DecodeScratch` for
the per-anchor work and allocates only arrays sized by the candidate set (anchors above the
confidence threshold; NMS's IoU matrix is n x n for up to `NMS_MATRIX_MAX` of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.engines.base import Layout, ModelInfo
from edge.errors import CameraError, ModelError
from edge.verdict import Detections

PAD_VALUE = 114  # Ultralytics letterbox grey
MAX_WH = 7680  # per-class box offset for class-aware NMS (Ultralytics `max_wh`)
MAX_NMS = 30000  # most candidates that enter NMS (Ultralytics `max_nms`)
_255 = np.float32(255.0)  # divide, not multiply by 1/255: bit-identical to Ultralytics


# --------------------------------------------------------------------------------------------
# Letterbox geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LetterboxGeometry:
    """How a source image was placed into the network input.

    `scale` is min(dst/src); the image is resized to `new_hw` (each side rounded like
    Ultralytics) and placed at (`pad_top`, `pad_left`) in the `dst_hw` input, the rest grey.
    """

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    scale: float
    new_hw: tuple[int, int]
    pad_top: int
    pad_left: int

    @property
    def gain_x(self) -> float:
        """Effective horizontal scale after rounding (new_w / src_w), as Ultralytics uses it."""
        return self.new_hw[1] / self.src_hw[1]

    @property
    def gain_y(self) -> float:
        return self.new_hw[0] / self.src_hw[0]

    @property
    def needs_resize(self) -> bool:
        return self.new_hw != self.src_hw

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) xyxy in source pixels -> input pixels (a new float32 array)."""
        out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
        out[:, 0::2] *= np.float32(self.gain_x)
        out[:, 1::2] *= np.float32(self.gain_y)
        out[:, 0::2] += np.float32(self.pad_left)
        out[:, 1::2] += np.float32(self.pad_top)
        return out

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) xyxy in input pixels -> source pixels, clipped to the source image.

        Works in place when `boxes` is a writable float32 array (and returns it).
        """
        out = boxes if boxes.dtype == np.float32 and boxes.flags.writeable else boxes.astype(np.float32)
        out = out.reshape(-1, 4)
        # One pass per step over the (n, 4) array with per-column constants (x, y, x, y).
        out -= np.array((self.pad_left, self.pad_top, self.pad_left, self.pad_top), np.float32)
        out /= np.array((self.gain_x, self.gain_y, self.gain_x, self.gain_y), np.float32)
        np.maximum(out, np.float32(0), out=out)
        np.minimum(out, np.array((self.src_hw[1], self.src_hw[0]) * 2, np.float32), out=out)
        return out


def letterbox_geometry(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> LetterboxGeometry:
    """Ultralytics `LetterBox(new_shape=dst_hw, auto=False, scaleup=True, center=True)` maths.

    Python's `round` (half to even) is used on purpose: it is what Ultralytics does.
    """
    sh, sw = int(src_hw[0]), int(src_hw[1])
    dh_, dw_ = int(dst_hw[0]), int(dst_hw[1])
    if sh <= 0 or sw <= 0 or dh_ <= 0 or dw_ <= 0:
        raise ValueError(f"letterbox needs positive sizes, got src {src_hw} dst {dst_hw}")
    r = min(dh_ / sh, dw_ / sw)
    new_w, new_h = max(round(sw * r), 1), max(round(sh * r), 1)
    dw, dh = (dw_ - new_w) / 2, (dh_ - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    return LetterboxGeometry((sh, sw), (dh_, dw_), r, (new_h, new_w), int(top), int(left))


# --------------------------------------------------------------------------------------------
# Preprocessing into the engine's input tensor
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """Everything prepared once for one source frame shape."""

    geometry: LetterboxGeometry
    mono: bool  # source frame is single-channel
    scratch: np.ndarray | None  # resized uint8 image (new_h, new_w[, 3]) or None (no resize)
    gray: np.ndarray | None  # BGR -> grey scratch (source size) for 1-channel models
    views: tuple[np.ndarray, ...]  # per model channel, the image region of the input buffer
    planes: list[np.ndarray] | None = None  # colour frames: contiguous uint8 planes (split once)


class Preprocessor:
    """Letterboxes camera frames into one batch item of an engine's input tensor, in place.

    `buffer` is the (C, H, W) float32/float16 view of the engine's input for one batch item.
    Frames are HxW (mono) or HxWx3 (BGR) uint8. The tensor gets RGB order scaled to [0, 1];
    mono frames are replicated into 3 channels, or go straight in for a 1-channel model.
    Not thread-safe: one per batch item per worker.
    """

    def __init__(self, buffer: np.ndarray, *, pad_value: int = PAD_VALUE, max_sizes: int = 8) -> None:
        if buffer.ndim != 3 or buffer.shape[0] not in (1, 3):
            raise ValueError(f"input buffer must be (C, H, W) with C 1 or 3, got {buffer.shape}")
        if buffer.dtype not in (np.float32, np.float16):
            raise ValueError(f"input buffer must be float32 or float16, got {buffer.dtype}")
        if not buffer.flags.writeable:
            raise ValueError("input buffer is read-only")
        self._buf = buffer
        self._channels = int(buffer.shape[0])
        self._hw = (int(buffer.shape[1]), int(buffer.shape[2]))
        self._pad = np.float32(pad_value) / _255
        self._max_sizes = max(1, max_sizes)
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._active: _Plan | None = None

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._hw

    def reset(self) -> None:
        """Forget which padding is in the buffer (call if something else wrote into it)."""
        self._active = None

    def geometry_for(self, frame_shape: tuple[int, ...]) -> LetterboxGeometry:
        return self._plan_for(frame_shape).geometry

    def __call__(self, frame: np.ndarray, channel_order: str = "BGR") -> LetterboxGeometry:
        """Write `frame` into the buffer; `channel_order` says what a colour frame's last axis is."""
        if frame.dtype != np.uint8:
            raise CameraError(f"frames must be uint8, got {frame.dtype}")
        plan = self._plans.get(frame.shape)
        if plan is None:
            plan = self._plan_for(frame.shape)
        if plan is not self._active:
            self._buf.fill(self._pad)  # padding is written once per source size
            self._active = plan
        src = frame[:, :, 0] if frame.ndim == 3 and plan.mono else frame
        if plan.gray is not None:  # BGR into a 1-channel model: grey first, as Ultralytics loads it
            code = cv2.COLOR_RGB2GRAY if channel_order == "RGB" else cv2.COLOR_BGR2GRAY
            cv2.cvtColor(src, code, dst=plan.gray)
            src = plan.gray
        if plan.scratch is not None:
            g = plan.geometry
            out = cv2.resize(src, (g.new_hw[1], g.new_hw[0]), dst=plan.scratch, interpolation=cv2.INTER_LINEAR)
            if out is not plan.scratch:  # pragma: no cover - OpenCV did not honour dst
                np.copyto(plan.scratch, out.reshape(plan.scratch.shape))
            src = plan.scratch
        views = plan.views
        if src.ndim == 2:
            np.divide(src, _255, out=views[0], casting="unsafe")
            for v in views[1:]:
                np.copyto(v, views[0])
        else:
            # The model takes RGB: from BGR, model channel c reads source channel 2 - c.
            # Splitting into contiguous planes first halves the cost of the strided reads.
            # (A non-contiguous camera view is read strided: OpenCV would copy it.)
            rgb = channel_order == "RGB"
            if src.flags.c_contiguous:
                planes = plan.planes
                if planes is None or planes[0].shape != src.shape[:2]:
                    planes = plan.planes = [np.empty(src.shape[:2], np.uint8) for _ in range(3)]
                cv2.split(src, planes)
                channels: Sequence[np.ndarray] = planes
            else:
                channels = [src[:, :, c] for c in range(3)]
            for c in range(3):
                np.divide(channels[c if rgb else 2 - c], _255, out=views[c], casting="unsafe")
        return plan.geometry

    def _plan_for(self, shape: tuple[int, ...]) -> _Plan:
        plan = self._plans.get(shape)
        if plan is not None:
            return plan
        if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
            mono = True
        elif len(shape) == 3 and shape[2] == 3:
            mono = False
        else:
            raise CameraError(f"frames must be HxW mono or HxWx3 BGR, got shape {shape}")
        g = letterbox_geometry((shape[0], shape[1]), self._hw)
        nh, nw = g.new_hw
        gray = np.empty((shape[0], shape[1]), np.uint8) if (not mono and self._channels == 1) else None
        scratch = None
        if g.needs_resize:
            scratch = np.empty((nh, nw) if (mono or gray is not None) else (nh, nw, 3), np.uint8)
        region = (slice(g.pad_top, g.pad_top + nh), slice(g.pad_left, g.pad_left + nw))
        views = tuple(self._buf[c][region] for c in range(self._channels))
        plan = _Plan(g, mono, scratch, gray, views)
        if len(self._plans) >= self._max_sizes:
            oldest = next(iter(self._plans))
            if self._plans[oldest] is self._active:
                self._active = None
            del self._plans[oldest]
        self._plans[shape] = plan
        return plan


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
