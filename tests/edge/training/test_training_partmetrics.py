"""Part-level and box-level metrics on hand-made cases with known answers.

AP follows Ultralytics exactly, including its 101-point interpolation in which the precision
curve drops to 0 at recall 1.0: a perfect class scores 0.995, not 1.0 (as `yolo val` reports).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.training.partmetrics import (
    BoxStats,
    box_iou,
    confusion_update,
    global_threshold_sweep,
    interpolated_ap,
    match_predictions,
    max_confidence_matrix,
    part_metrics,
    per_class_max,
    rejected_parts,
)

PERFECT_AP = 0.995  # Ultralytics' value for a perfect PR curve


def arr(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 4)


# --------------------------------------------------------------------------- part level


def test_per_class_max_and_matrix() -> None:
    np.testing.assert_allclose(per_class_max(np.array([0, 2, 0]), np.array([0.3, 0.9, 0.5]), 3), [0.5, 0.0, 0.9])
    m = max_confidence_matrix([(np.array([1]), np.array([0.4])), (np.zeros(0, int), np.zeros(0))], 2)
    np.testing.assert_allclose(m, [[0.0, 0.4], [0.0, 0.0]])
    with pytest.raises(ValueError):
        per_class_max(np.array([3]), np.array([0.5]), 3)


def test_part_metrics_counts_and_rates() -> None:
    #              A     B
    m = np.array(
        [
            [0.9, 0.0],  # defective, rejected by A
            [0.1, 0.35],  # defective, B 0.35 < 0.4 -> missed
            [0.0, 0.5],  # good, rejected by B -> false reject
            [0.2, 0.1],  # good, passes
            [0.0, 0.0],
        ]
    )  # good, passes
    d = np.array([True, True, False, False, False])
    pm = part_metrics(m, d, [0.5, 0.4])
    assert (pm.tp, pm.fn, pm.fp, pm.tn) == (1, 1, 1, 2)
    assert (pm.parts, pm.defective_parts, pm.good_parts) == (5, 2, 3)
    assert pm.part_recall == pytest.approx(0.5)
    assert pm.false_reject_rate == pytest.approx(1 / 3)
    assert part_metrics(m, d, 0.1).part_recall == 1.0  # a scalar applies to every class
    assert rejected_parts(m, [0.95, 0.95]).tolist() == [False] * 5
    assert part_metrics(m, d, 0.35).to_dict()["tp"] == 2  # >= threshold rejects


def test_part_metrics_empty_denominators() -> None:
    pm = part_metrics(np.zeros((2, 1)), np.array([False, False]), 0.5)
    assert pm.part_recall == 0.0 and pm.false_reject_rate == 0.0 and pm.good_parts == 2


def test_global_sweep_matches_part_metrics() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((50, 3)).astype(np.float32) * (rng.random((50, 3)) > 0.4)
    d = rng.random(50) > 0.5
    ts = np.linspace(0, 1, 21)
    recall, frr = global_threshold_sweep(m, d, ts)
    for t, r, f in zip(ts, recall, frr, strict=True):
        pm = part_metrics(m, d, t)
        assert r == pytest.approx(pm.part_recall) and f == pytest.approx(pm.false_reject_rate)


# --------------------------------------------------------------------------- box level


def test_box_iou() -> None:
    iou = box_iou(arr((0, 0, 10, 10)), arr((0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30)))
    assert iou[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0], abs=1e-6)


def test_interpolated_ap_known_values() -> None:
    assert interpolated_ap(np.array([1.0]), np.array([1.0]))[0] == pytest.approx(PERFECT_AP)
    # one FP above the TP: precision 0.5 across recall (0, 1), 0 at recall 1
    assert interpolated_ap(np.array([0.0, 1.0]), np.array([0.0, 0.5]))[0] == pytest.approx(0.4975)
    # half the boxes found at precision 1
    assert interpolated_ap(np.array([0.5]), np.array([1.0]))[0] == pytest.approx(0.495)


def test_perfect_predictions() -> None:
    stats = BoxStats(2)
    gt = arr((10, 10, 50, 50), (60, 60, 90, 100))
    stats.add(gt, np.array([0.9, 0.8]), np.array([0, 1]), gt, np.array([0, 1]))
    stats.add(gt[:1], np.array([0.7]), np.array([0]), gt[:1], np.array([0]))
    stats.add(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0, int))
    m = stats.compute()
    np.testing.assert_allclose(m.ap, np.full((2, 10), PERFECT_AP))
    assert m.map50 == pytest.approx(PERFECT_AP) and m.map50_95 == pytest.approx(PERFECT_AP)
    assert m.precision.tolist() == pytest.approx([1.0, 1.0]) and m.recall.tolist() == pytest.approx([1.0, 1.0])
    assert m.labels.tolist() == [2, 1] and m.images_with_class.tolist() == [2, 1]


def test_false_positive_above_true_positive() -> None:
    stats = BoxStats(1)
    gt = arr((10, 10, 50, 50))
    preds = arr((200, 200, 240, 240), (10, 10, 50, 50))
    stats.add(preds, np.array([0.9, 0.6]), np.array([0, 0]), gt, np.array([0]))
    m = stats.compute()
    assert m.ap50[0] == pytest.approx(0.4975)
    # and below it, the FP costs nothing
    stats = BoxStats(1)
    stats.add(preds, np.array([0.3, 0.6]), np.array([0, 0]), gt, np.array([0]))
    assert stats.compute().ap50[0] == pytest.approx(PERFECT_AP)


def test_missed_box() -> None:
    stats = BoxStats(1)
    gt = arr((10, 10, 50, 50), (100, 100, 140, 140))
    stats.add(arr((10, 10, 50, 50)), np.array([0.9]), np.array([0]), gt, np.array([0, 0]))
    m = stats.compute()
    assert m.ap50[0] == pytest.approx(0.495)
    assert m.recall[0] == pytest.approx(0.5) and m.precision[0] == pytest.approx(1.0)


def test_wrong_class() -> None:
    stats = BoxStats(3)
    gt = arr((10, 10, 50, 50))
    stats.add(gt, np.array([0.9]), np.array([1]), gt, np.array([0]))
    m = stats.compute()
    assert m.ap50[0] == 0.0  # class 0 has a label and no prediction of its own
    assert np.isnan(m.ap[1]).all() and np.isnan(m.ap[2]).all()  # no labels: not part of the mean
    assert m.map50 == 0.0
    d = m.to_dict(["a", "b", "c"])
    assert d["classes"]["b"]["ap50"] is None and d["classes"]["a"]["instances"] == 1


def test_iou_thresholds_sweep() -> None:
    # prediction shifted by 8 px: IoU = 32*40 / (2*40*40 - 32*40) = 0.667
    stats = BoxStats(1)
    stats.add(arr((18, 10, 58, 50)), np.array([0.9]), np.array([0]), arr((10, 10, 50, 50)), np.array([0]))
    m = stats.compute()
    np.testing.assert_allclose(m.ap[0, :4], PERFECT_AP)  # a TP at IoU 0.50, 0.55, 0.60, 0.65
    np.testing.assert_allclose(m.ap[0, 4:], 0.0)  # an FP from 0.70 up
    assert m.map50_95 == pytest.approx(PERFECT_AP * 4 / 10)


def test_match_predictions_greedy_by_confidence() -> None:
    gt = arr((10, 10, 50, 50))
    # both overlap the one target; the higher confidence claims it even with the lower IoU
    preds = arr((10, 10, 50, 50), (12, 10, 52, 50))
    correct = match_predictions(preds, np.array([0.5, 0.9]), np.array([0, 0]), gt, np.array([0]))
    assert correct[:, 0].tolist() == [False, True]
    # a prediction of another class never matches
    correct = match_predictions(preds[:1], np.array([0.5]), np.array([1]), gt, np.array([0]))
    assert not correct.any()


def test_confusion_matrix() -> None:
    nc = 2
    cm = np.zeros((nc + 1, nc + 1), np.int64)
    gt = arr((10, 10, 50, 50), (100, 100, 140, 140), (200, 200, 240, 240))
    gt_cls = np.array([0, 1, 1])
    preds = arr((10, 10, 50, 50), (100, 100, 140, 140), (300, 300, 340, 340), (200, 200, 240, 240))
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    classes = np.array([0, 0, 1, 1])  # right, wrong class, background FP, below threshold
    confusion_update(cm, preds, scores, classes, gt, gt_cls, conf=0.25)
    assert cm.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    # per-class thresholds: class 1 down to 0.05 now finds the third target
    cm2 = np.zeros_like(cm)
    confusion_update(cm2, preds, scores, classes, gt, gt_cls, conf=[0.25, 0.05])
    assert cm2[1, 1] == 1 and cm2[nc, 1] == 0
    # a good part: every kept prediction is a background FP
    cm3 = np.zeros_like(cm)
    confusion_update(cm3, preds, scores, classes, np.zeros((0, 4)), np.zeros(0, int), conf=0.25)
    assert cm3[:, nc].tolist() == [2, 1, 0] and cm3[:, :nc].sum() == 0
