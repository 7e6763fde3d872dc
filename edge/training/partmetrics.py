"""Model-quality metrics, pure numpy: part level (does the line reject the right parts?) and box level.

Part level: a part is one image. It is *defective* when its ground truth holds at least one box,
and it is *rejected* when any class c has a detection with confidence >= threshold[c]. Everything
is computed from one (n_images, n_classes) matrix of the highest confidence per class per image
(0 where a class has no detection), so many threshold sets can be tried cheaply:
``rejected = any(maxconf >= thresholds, axis=1)``. A defective part rejected because of a
detection elsewhere on it still counts as rejected: the PLC only sees the part's verdict.

Box level: COCO-style AP with the semantics of Ultralytics' detection validator (8.x), so our
numbers compare directly with ``yolo val``:
- per image, predictions are matched greedily in descending confidence; each claims the
  unclaimed ground truth of its own class with the highest IoU, separately at each of the ten
  IoU thresholds 0.50:0.05:0.95 (a match needs IoU >= threshold);
- AP per class from the cumulative precision/recall curve, a precision envelope and
  101-point interpolation (trapezoidal); perfect predictions therefore score 0.995, exactly as
  in Ultralytics, because the interpolated curve drops to 0 at recall 1.0;
- mAP averages the classes that have ground truth; precision/recall per class are read at the
  one confidence that maximises the (smoothed) mean F1 over those classes;
- the confusion matrix ([predicted, true], background last) matches class-agnostically at
  IoU > 0.45 in descending confidence, after a confidence filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
_AP_GRID = np.linspace(0.0, 1.0, 101)  # COCO 101-point recall grid
CURVE_POINTS = 1000  # resolution of the confidence and recall axes of the curves
_EPS = 1e-16


def _ratio(num: float, den: float) -> float:
    """num / den, or 0.0 for an empty denominator (the counts say which case it was)."""
    return float(num) / float(den) if den else 0.0


# --------------------------------------------------------------------------- part level


def per_class_max(classes: np.ndarray, scores: np.ndarray, num_classes: int) -> np.ndarray:
    """The highest score per class of one image's detections: shape (num_classes,), 0 if none."""
    out = np.zeros(num_classes, np.float32)
    cls = np.asarray(classes, np.int64).reshape(-1)
    sc = np.asarray(scores, np.float32).reshape(-1)
    if cls.shape != sc.shape:
        raise ValueError(f"classes {cls.shape} and scores {sc.shape} differ in length")
    if cls.size:
        if cls.min() < 0 or cls.max() >= num_classes:
            raise ValueError(f"class index outside 0..{num_classes - 1}")
        np.maximum.at(out, cls, sc)
    return out


def max_confidence_matrix(detections: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """Stack per-image (classes, scores) pairs into the (n_images, num_classes) max-confidence matrix."""
    m = np.zeros((len(detections), num_classes), np.float32)
    for i, (classes, scores) in enumerate(detections):
        m[i] = per_class_max(classes, scores, num_classes)
    return m


def threshold_vector(thresholds: float | Sequence[float] | np.ndarray, num_classes: int) -> np.ndarray:
    """A scalar or per-class thresholds as a float32 vector of length num_classes."""
    t = np.asarray(thresholds, np.float32)
    if t.ndim == 0:
        return np.full(num_classes, float(t), np.float32)
    if t.shape != (num_classes,):
        raise ValueError(f"expected {num_classes} thresholds, got shape {t.shape}")
    return t


def rejected_parts(maxconf: np.ndarray, thresholds: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean (n_images,): the part is rejected when any class reaches its threshold."""
    m = np.asarray(maxconf)
    if m.ndim != 2:
        raise ValueError(f"maxconf must be (n_images, n_classes), got shape {m.shape}")
    return np.any(m >= threshold_vector(thresholds, m.shape[1]), axis=1)


@dataclass(frozen=True)
class PartMetrics:
    """Part-level outcome for one set of thresholds. tp = defective and rejected, fp = good and rejected."""

    parts: int
    defective_parts: int
    good_parts: int
    tp: int
    fn: int
    fp: int
    tn: int

    @property
    def part_recall(self) -> float:
        """Defective parts rejected / defective parts (0.0 when there are none)."""
        return _ratio(self.tp, self.defective_parts)

    @property
    def false_reject_rate(self) -> float:
        """Good parts rejected / good parts (0.0 when there are none)."""
        return _ratio(self.fp, self.good_parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "part_recall": self.part_recall,
            "false_reject_rate": self.false_reject_rate,
            "parts": self.parts,
            "defective_parts": self.defective_parts,
            "good_parts": self.good_parts,
            "tp": self.tp,
            "fn": self.fn,
            "fp": self.fp,
            "tn": self.tn,
        }


def part_metrics(
    maxconf: np.ndarray, defective: np.ndarray, thresholds: float | Sequence[float] | np.ndarray
) -> PartMetrics:
    """Part recall, false-reject rate and the part confusion counts for one threshold set."""
    d = np.asarray(defective, bool).reshape(-1)
    if np.asarray(maxconf).shape[0] != d.shape[0]:
        raise ValueError("maxconf and defective disagree on the number of images")
    r = rejected_parts(maxconf, thresholds)
    tp = int(np.count_nonzero(r & d))
    fp = int(np.count_nonzero(r & ~d))
    nd = int(np.count_nonzero(d))
    ng = int(d.shape[0] - nd)
    return PartMetrics(int(d.shape[0]), nd, ng, tp, nd - tp, fp, ng - fp)


def global_threshold_sweep(
    maxconf: np.ndarray, defective: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Part recall and false-reject rate for each single global threshold in `thresholds` (vectorised)."""
    d = np.asarray(defective, bool).reshape(-1)
    rowmax = np.asarray(maxconf, np.float64).max(axis=1) if np.asarray(maxconf).size else np.zeros(d.shape)
    t = np.asarray(thresholds, np.float64).reshape(-1)
    pos = np.sort(rowmax[d])
    neg = np.sort(rowmax[~d])
    caught = pos.size - np.searchsorted(pos, t, side="left")  # rowmax >= t
    false = neg.size - np.searchsorted(neg, t, side="left")
    recall = caught / pos.size if pos.size else np.zeros(t.shape)
    frr = false / neg.size if neg.size else np.zeros(t.shape)
    return recall.astype(np.float64), frr.astype(np.float64)


# --------------------------------------------------------------------------- box level


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-7)


def match_predictions(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """Which predictions of one image are true positives: bool (n_pred, n_iou), in the input order."""
    n_pred, n_thr = int(np.asarray(pred_scores).size), int(iou_thresholds.size)
    correct = np.zeros((n_pred, n_thr), bool)
    n_gt = int(np.asarray(gt_classes).size)
    if n_pred == 0 or n_gt == 0:
        return correct
    order = np.argsort(-np.asarray(pred_scores, np.float64), kind="stable")
    pc = np.asarray(pred_classes, np.int64).reshape(-1)[order]
    gc = np.asarray(gt_classes, np.int64).reshape(-1)
    iou = box_iou(gt_boxes, np.asarray(pred_boxes).reshape(-1, 4)[order])  # (n_gt, n_pred)
    iou = np.where(gc[:, None] == pc[None, :], iou, 0.0)  # a box only matches its own class
    claimed = np.zeros((n_gt, n_thr), bool)
    cols = np.arange(n_thr)
    sorted_correct = np.zeros((n_pred, n_thr), bool)
    for j in np.flatnonzero((iou >= iou_thresholds.min()).any(axis=0)):
        free = np.where(claimed, 0.0, iou[:, j : j + 1])  # (n_gt, n_thr): IoU with unclaimed targets
        best = free.argmax(axis=0)
        hit = free[best, cols] >= iou_thresholds
        sorted_correct[j] = hit
        claimed[best, cols] |= hit
    correct[order] = sorted_correct
    return correct


def interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one precision/recall curve: envelope + 101-point interpolation; also (envelope, recall axis)."""
    last = recall[-1] if len(recall) else 1.0
    rec = np.concatenate(([0.0], recall, [last], [1.0]))
    pre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    envelope = np.maximum.accumulate(pre[::-1])[::-1]
    y = np.interp(_AP_GRID, rec, envelope)
    ap = float(np.sum((y[1:] + y[:-1]) * np.diff(_AP_GRID)) / 2.0)
    return ap, envelope, rec


def _box_smooth(y: np.ndarray, fraction: float) -> np.ndarray:
    """Moving average over an odd window of ~2*fraction of the length, edges held constant."""
    width = round(len(y) * fraction * 2) // 2 + 1
    pad = width // 2
    padded = np.concatenate((np.full(pad, y[0]), y, np.full(pad, y[-1])))
    return np.convolve(padded, np.ones(width) / width, mode="valid")


@dataclass(frozen=True)
class BoxMetrics:
    """Box-level metrics. Arrays are per class; classes without ground truth hold NaN AP/P/R."""

    labels: np.ndarray  # int (nc,): ground-truth boxes per class
    images_with_class: np.ndarray  # int (nc,): images holding at least one box of the class
    ap: np.ndarray  # (nc, 10) AP at IoU 0.50..0.95
    precision: np.ndarray  # (nc,) at the max-F1 confidence
    recall: np.ndarray  # (nc,)
    f1: np.ndarray  # (nc,)
    f1_confidence: float  # the confidence where the mean F1 peaks
    pr_recall: np.ndarray  # (CURVE_POINTS,) recall axis of the PR curves
    pr_precision: np.ndarray  # (nc, CURVE_POINTS) interpolated precision envelope at IoU 0.5

    @property
    def present(self) -> np.ndarray:
        return np.asarray(self.labels > 0)

    @property
    def ap50(self) -> np.ndarray:
        return np.asarray(self.ap[:, 0])

    @property
    def ap50_95(self) -> np.ndarray:
        return np.asarray(self.ap.mean(axis=1))

    def _mean(self, values: np.ndarray) -> float:
        return float(np.mean(values[self.present])) if self.present.any() else 0.0

    @property
    def map50(self) -> float:
        return self._mean(self.ap50)

    @property
    def map50_95(self) -> float:
        return self._mean(self.ap50_95)

    @property
    def mean_precision(self) -> float:
        return self._mean(self.precision)

    @property
    def mean_recall(self) -> float:
        return self._mean(self.recall)

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        classes = {
            name: {
                "instances": int(self.labels[i]),
                "images": int(self.images_with_class[i]),
                "ap50": num(self.ap50[i]),
                "ap50_95": num(self.ap50_95[i]),
                "precision": num(self.precision[i]),
                "recall": num(self.recall[i]),
            }
            for i, name in enumerate(names)
        }
        return {
            "mAP50": round(self.map50, 6),
            "mAP50-95": round(self.map50_95, 6),
            "precision": round(self.mean_precision, 6),
            "recall": round(self.mean_recall, 6),
            "f1_confidence": round(self.f1_confidence, 6),
            "classes": classes,
        }


class BoxStats:
    """Accumulates per-image matches; `compute()` turns them into BoxMetrics."""

    def __init__(self, num_classes: int, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> None:
        self.num_classes = num_classes
        self.iou_thresholds = iou_thresholds
        self._tp: list[np.ndarray] = []
        self._conf: list[np.ndarray] = []
        self._pred_cls: list[np.ndarray] = []
        self._target_cls: list[np.ndarray] = []
        self._images_with_class = np.zeros(num_classes, np.int64)

    def add(
        self,
        pred_boxes: np.ndarray,
        pred_scores: np.ndarray,
        pred_classes: np.ndarray,
        gt_boxes: np.ndarray,
        gt_classes: np.ndarray,
    ) -> None:
        """Add one image: predictions (xyxy, score, class) and its ground truth (xyxy, class)."""
        gt_cls = np.asarray(gt_classes, np.int64).reshape(-1)
        self._tp.append(match_predictions(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_cls, self.iou_thresholds))
        self._conf.append(np.asarray(pred_scores, np.float64).reshape(-1))
        self._pred_cls.append(np.asarray(pred_classes, np.int64).reshape(-1))
        self._target_cls.append(gt_cls)
        self._images_with_class[np.unique(gt_cls)] += 1

    def compute(self) -> BoxMetrics:
        n_thr = self.iou_thresholds.size
        tp = np.concatenate(self._tp) if self._tp else np.zeros((0, n_thr), bool)
        conf = np.concatenate(self._conf) if self._conf else np.zeros(0)
        pred_cls = np.concatenate(self._pred_cls) if self._pred_cls else np.zeros(0, np.int64)
        target = np.concatenate(self._target_cls) if self._target_cls else np.zeros(0, np.int64)
        return box_metrics(tp, conf, pred_cls, target, self.num_classes, self._images_with_class.copy())


def box_metrics(
    tp: np.ndarray,
    conf: np.ndarray,
    pred_cls: np.ndarray,
    target_cls: np.ndarray,
    num_classes: int,
    images_with_class: np.ndarray | None = None,
) -> BoxMetrics:
    """AP per class and IoU threshold, and P/R at the max-F1 confidence, from pooled matches."""
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    labels = np.bincount(np.asarray(target_cls, np.int64), minlength=num_classes)[:num_classes]
    n_thr = tp.shape[1]
    axis = np.linspace(0.0, 1.0, CURVE_POINTS)
    ap = np.full((num_classes, n_thr), np.nan)
    p_curve = np.zeros((num_classes, CURVE_POINTS))
    r_curve = np.zeros((num_classes, CURVE_POINTS))
    pr_precision = np.zeros((num_classes, CURVE_POINTS))
    for c in range(num_classes):
        if labels[c] == 0:
            continue
        sel = pred_cls == c
        if not sel.any():
            ap[c] = 0.0
            continue
        tpc = tp[sel].cumsum(axis=0)
        fpc = (~tp[sel]).cumsum(axis=0)
        rec = tpc / (labels[c] + _EPS)
        pre = tpc / (tpc + fpc)
        # curves over confidence (descending conf -> negate to get increasing x for interp)
        r_curve[c] = np.interp(-axis, -conf[sel], rec[:, 0], left=0)
        p_curve[c] = np.interp(-axis, -conf[sel], pre[:, 0], left=1)
        for k in range(n_thr):
            ap[c, k], envelope, rec_axis = interpolated_ap(rec[:, k], pre[:, k])
            if k == 0:
                pr_precision[c] = np.interp(axis, rec_axis, envelope)
    present = labels > 0
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + _EPS)
    best = int(_box_smooth(f1_curve[present].mean(axis=0), 0.1).argmax()) if present.any() else 0
    nan = np.full(num_classes, np.nan)
    precision = np.where(present, p_curve[:, best], nan)
    recall = np.where(present, r_curve[:, best], nan)
    f1 = np.where(present, f1_curve[:, best], nan)
    if images_with_class is None:
        images_with_class = np.zeros(num_classes, np.int64)
    return BoxMetrics(labels, images_with_class, ap, precision, recall, f1, float(axis[best]), axis, pr_precision)


def confusion_update(
    matrix: np.ndarray,
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    conf: float | Sequence[float] | np.ndarray = 0.25,
    iou_threshold: float = 0.45,
) -> None:
    """Add one image to a (nc+1, nc+1) [predicted, true] confusion matrix (last row/column = background).

    Predictions below `conf` (a scalar or per-class thresholds; kept when score >= threshold)
    are ignored; the rest claim, in descending confidence and regardless of class, the unclaimed
    ground truth with the highest IoU above `iou_threshold`.
    """
    nc = matrix.shape[0] - 1
    scores = np.asarray(pred_scores, np.float64).reshape(-1)
    pcls = np.asarray(pred_classes, np.int64).reshape(-1)
    keep = scores >= threshold_vector(conf, nc)[pcls] if pcls.size else np.zeros(0, bool)
    scores, pcls = scores[keep], pcls[keep]
    pboxes = np.asarray(pred_boxes).reshape(-1, 4)[keep]
    gcls = np.asarray(gt_classes, np.int64).reshape(-1)
    iou = box_iou(gt_boxes, pboxes)
    gt_match = np.full(gcls.size, -1)
    det_used = np.zeros(pcls.size, bool)
    for j in np.argsort(-scores, kind="stable"):
        if gcls.size == 0:
            break
        g = int(iou[:, j].argmax())
        if iou[g, j] > iou_threshold:
            gt_match[g] = j
            det_used[j] = True
            iou[g] = 0.0
    for g, c in enumerate(gcls):
        matrix[pcls[gt_match[g]] if gt_match[g] >= 0 else nc, c] += 1
    for j in np.flatnonzero(~det_used):
        matrix[pcls[j], nc] += 1
