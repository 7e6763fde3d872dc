"""Per-class reject thresholds that reach a target part recall at the lowest false-reject rate.

Input is the (n_images, n_classes) max-confidence matrix of one evaluation pass and which images
are defective (see `edge.training.partmetrics`). A part is rejected when any class c scores
>= thresholds[c]. Scores below `floor` (the engine's confidence: the service never sees them)
count as no detection, and no threshold goes below it.

Algorithm:
1. One global threshold: the largest that still rejects the required number of defective parts
   (ceil(target * defective)). If even `floor` does not, the target is unreachable: the result
   says so (``reachable=False``) and holds `floor` for every class.
2. Coordinate ascent, steepest first: for every class, the largest candidate threshold (the
   distinct scores of that class) that keeps recall >= target, with the other classes fixed;
   apply the move that removes the most false rejects; repeat until no move removes any.
   Every move strictly lowers the false-reject count, so this ends.
3. Safety margin: the ascent leaves each threshold on the score of a defective part it must
   catch (zero margin). Any threshold in (g, t] - g being the highest score of that class on a
   good part nobody else rejects - gives the same false rejects on this data, so each class is
   moved down to the middle of that band (to `floor` when no good part bounds it from below).
   This never lowers recall or raises the false-reject rate measured here, and leaves room on
   both sides for new data.

Out-of-sample check (`cross_fit`): thresholds calibrated on a set and scored on the same set
flatter themselves (they were fitted to exactly those parts). `cross_fit` holds out one group
of parts at a time (a production lot, a board design: near-duplicates stay together),
calibrates on the rest and scores the held-out group; the pooled counts over all groups
estimate what the line will see with thresholds fitted on data like it.

Caveat: on data where defective parts carry several defects, the ascent may raise a class that
other classes always "cover" very high; a part with only that defect would then pass. Check the
per-class box recall (`edge-inspect eval`) alongside, and calibrate on data like the line's.

The sidecar `<model stem>.thresholds.yaml` next to the model stores the result; it is bound to
the model file by `model_id` (first 16 hex digits of its sha256).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.errors import ConfigError, DatasetError
from edge.thresholds import Thresholds, load_thresholds, model_file_id, sidecar_path
from edge.training.partmetrics import PartMetrics, part_metrics

DEFAULT_TARGET_RECALL = 0.995
DEFAULT_FLOOR = 0.25  # the engines' default confidence


@dataclass(frozen=True)
class CalibrationResult:
    thresholds: np.ndarray  # float (n_classes,)
    target_part_recall: float
    reachable: bool
    measured: PartMetrics  # with `thresholds`
    global_threshold: float  # step 1's single threshold
    global_measured: PartMetrics  # with the single threshold
    floor: float
    moves: int
    message: str


def _need(target: float, defective: int) -> int:
    """How many defective parts must be rejected for recall >= target."""
    return min(defective, math.ceil(target * defective - 1e-9))


def calibrate(
    maxconf: np.ndarray,
    defective: np.ndarray,
    target_recall: float = DEFAULT_TARGET_RECALL,
    floor: float = DEFAULT_FLOOR,
) -> CalibrationResult:
    """Choose per-class thresholds (see the module doc for the algorithm)."""
    m = np.asarray(maxconf, np.float64)
    d = np.asarray(defective, bool).reshape(-1)
    if m.ndim != 2 or m.shape[0] != d.shape[0]:
        raise DatasetError(f"maxconf {m.shape} does not match {d.shape[0]} part labels")
    if not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"target part recall must be within (0, 1], got {target_recall}")
    if not 0.0 < floor <= 1.0:
        raise ConfigError(f"threshold floor must be within (0, 1], got {floor}")
    n_def = int(d.sum())
    if n_def == 0:
        raise DatasetError("cannot calibrate: the data holds no defective parts")
    nc = m.shape[1]
    s = np.where(m >= floor, m, 0.0)  # below the floor the service sees nothing
    need = _need(target_recall, n_def)

    rowmax = np.sort(s[d].max(axis=1))[::-1]
    if rowmax[need - 1] < floor:
        thr = np.full(nc, floor)
        got = part_metrics(s, d, thr)
        msg = (
            f"target part recall {target_recall} is unreachable: even at the floor {floor} only "
            f"{got.tp} of {n_def} defective parts are rejected (recall {got.part_recall:.4f}); "
            "returning the floor for every class"
        )
        return CalibrationResult(thr, target_recall, False, got, floor, got, floor, 0, msg)
    g0 = float(rowmax[need - 1])
    thr = np.full(nc, g0)
    global_measured = part_metrics(s, d, thr)

    moves = 0
    while True:
        best_gain, best_c, best_t = 0, -1, 0.0
        false_now = int(np.count_nonzero(np.any(s >= thr, axis=1) & ~d))
        for c in range(nc):
            t, false_after = _raise_class(s, d, thr, c, need)
            if false_now - false_after > best_gain:
                best_gain, best_c, best_t = false_now - false_after, c, t
        if best_c < 0:
            break
        thr[best_c] = best_t
        moves += 1

    for c in range(nc):
        thr[c] = _centre_in_band(s, d, thr, c, floor)

    measured = part_metrics(s, d, thr)
    msg = (
        f"part recall {measured.part_recall:.4f} (target {target_recall}) at false-reject rate "
        f"{measured.false_reject_rate:.4f}; a single threshold {g0:.4f} gave "
        f"{global_measured.false_reject_rate:.4f}"
    )
    return CalibrationResult(
        thr.astype(np.float64), target_recall, True, measured, g0, global_measured, floor, moves, msg
    )


@dataclass(frozen=True)
class HeldOutGroup:
    """One fold of `cross_fit`: the group scored with thresholds calibrated without it."""

    group: str
    thresholds: np.ndarray
    reachable: bool  # whether the target was reachable on the other groups
    measured: PartMetrics  # on this group


@dataclass(frozen=True)
class CrossFit:
    folds: list[HeldOutGroup]
    pooled: PartMetrics  # the folds' counts added up: every part scored out of sample once


def cross_fit(
    maxconf: np.ndarray,
    defective: np.ndarray,
    groups: Sequence[str],
    target_recall: float = DEFAULT_TARGET_RECALL,
    floor: float = DEFAULT_FLOOR,
) -> CrossFit:
    """Leave one group out: calibrate on the other groups, score the held-out one (see module doc).

    A group whose complement holds no defective part cannot be calibrated for: DatasetError.
    """
    m = np.asarray(maxconf, np.float64)
    d = np.asarray(defective, bool).reshape(-1)
    g = np.asarray(list(groups), dtype=object)
    if g.shape[0] != d.shape[0]:
        raise DatasetError(f"{g.shape[0]} group labels for {d.shape[0]} parts")
    names = sorted(set(g.tolist()))
    if len(names) < 2:
        raise DatasetError(f"cross-fitting needs parts from at least 2 groups, found {len(names)}: {names}")
    folds: list[HeldOutGroup] = []
    for name in names:
        held = g == name
        if not d[~held].any():
            raise DatasetError(f"cross-fitting: without group {name!r} no defective part is left to calibrate on")
        cal = calibrate(m[~held], d[~held], target_recall, floor)
        folds.append(HeldOutGroup(name, cal.thresholds, cal.reachable, part_metrics(m[held], d[held], cal.thresholds)))
    counts = [sum(getattr(f.measured, k) for f in folds) for k in ("parts", "defective_parts", "good_parts")]
    tp, fp = sum(f.measured.tp for f in folds), sum(f.measured.fp for f in folds)
    pooled = PartMetrics(counts[0], counts[1], counts[2], tp, counts[1] - tp, fp, counts[2] - fp)
    return CrossFit(folds, pooled)


def _others(s: np.ndarray, thr: np.ndarray, c: int) -> np.ndarray:
    """Parts rejected by the classes other than c."""
    mask = np.ones(s.shape[1], bool)
    mask[c] = False
    return np.any(s[:, mask] >= thr[mask], axis=1)


def _raise_class(s: np.ndarray, d: np.ndarray, thr: np.ndarray, c: int, need: int) -> tuple[float, int]:
    """The largest threshold for class c keeping >= need defective rejects; and the false rejects then."""
    others = _others(s, thr, c)
    col = s[:, c]
    candidates = np.unique(col[col >= thr[c]])  # raising only: thr[c] itself is feasible
    if candidates.size == 0:
        return float(thr[c]), int(np.count_nonzero((others | (col >= thr[c])) & ~d))
    pos = np.sort(col[d & ~others])
    neg = np.sort(col[~d & ~others])
    base_pos = int(np.count_nonzero(d & others))
    base_neg = int(np.count_nonzero(~d & others))
    caught = base_pos + pos.size - np.searchsorted(pos, candidates, side="left")
    feasible = np.flatnonzero(caught >= need)
    if feasible.size == 0:  # cannot happen while thr is feasible; stay put
        return float(thr[c]), int(np.count_nonzero((others | (col >= thr[c])) & ~d))
    t = float(candidates[feasible[-1]])
    false_after = base_neg + neg.size - int(np.searchsorted(neg, t, side="left"))
    return t, false_after


def _centre_in_band(s: np.ndarray, d: np.ndarray, thr: np.ndarray, c: int, floor: float) -> float:
    """Lower class c's threshold into the middle of the band that adds no false reject."""
    t = float(thr[c])
    col = s[:, c]
    free_good = ~d & ~_others(s, thr, c) & (col < t) & (col >= floor)
    if not free_good.any():
        return floor
    g = float(col[free_good].max())
    above = col[(col > g) & (col <= t)]
    hi = float(above.min()) if above.size else t
    mid = (g + hi) / 2.0
    return mid if g < mid <= hi else hi


# --------------------------------------------------------------------------- sidecar file
# The format and loader live in edge/thresholds.py (the decision rules read it too).

__all__ = ["Thresholds", "load_thresholds", "model_file_id", "save_thresholds", "sidecar_path"]


def save_thresholds(
    path: Path,
    *,
    model_id: str,
    names: Sequence[str],
    result: CalibrationResult,
    data: Mapping[str, Any] | str,
    model_name: str | None = None,
    cross_fitted: CrossFit | None = None,
) -> Path:
    """Write a calibration result as a thresholds sidecar; returns the path.

    With `cross_fitted`, its pooled out-of-sample estimate is stored beside the in-sample one.
    """
    if len(names) != result.thresholds.shape[0]:
        raise ConfigError(f"{len(names)} class names for {result.thresholds.shape[0]} thresholds")
    m = result.measured
    doc: dict[str, Any] = {
        "model_id": model_id,
        "model": model_name,
        "target_part_recall": float(result.target_part_recall),
        "reachable": bool(result.reachable),
        "floor": float(result.floor),
        "thresholds": {n: round(float(t), 6) for n, t in zip(names, result.thresholds, strict=True)},
        "measured": {
            "part_recall": round(m.part_recall, 6),
            "false_reject_rate": round(m.false_reject_rate, 6),
            "parts": m.parts,
            "defective_parts": m.defective_parts,
            "good_parts": m.good_parts,
        },
        "data": dict(data) if isinstance(data, Mapping) else {"description": str(data)},
        "cross_fitted": None
        if cross_fitted is None
        else {
            "part_recall": round(cross_fitted.pooled.part_recall, 6),
            "false_reject_rate": round(cross_fitted.pooled.false_reject_rate, 6),
            "groups": [f.group for f in cross_fitted.folds],
        },
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if model_name is None:
        del doc["model"]
    if cross_fitted is None:
        del doc["cross_fitted"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


