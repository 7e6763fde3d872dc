"""Threshold calibration: known toy answers, unreachable targets, optimality checks, the sidecar file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.errors import ConfigError, DatasetError
from edge.training.calibrate import (
    calibrate,
    cross_fit,
    load_thresholds,
    model_file_id,
    save_thresholds,
    sidecar_path,
)
from edge.training.partmetrics import part_metrics


def toy() -> tuple[np.ndarray, np.ndarray]:
    """Class A catches defects at 0.4 (good parts reach 0.3); class B noise on good parts up to 0.6,
    defective B at 0.8."""
    #               A     B
    m = np.array(
        [
            [0.40, 0.00],  # defective (A)
            [0.55, 0.10],  # defective (A)
            [0.00, 0.80],  # defective (B)
            [0.10, 0.85],  # defective (B)
            [0.30, 0.20],  # good
            [0.05, 0.60],  # good
            [0.20, 0.45],  # good
            [0.00, 0.00],
        ]
    )  # good
    d = np.array([True, True, True, True, False, False, False, False])
    return m, d


def test_toy_thresholds_are_known() -> None:
    m, d = toy()
    res = calibrate(m, d, target_recall=0.995, floor=0.05)
    a, b = res.thresholds
    assert 0.3 < a <= 0.4
    assert 0.6 < b <= 0.8
    assert res.reachable
    assert res.measured.part_recall == 1.0 and res.measured.false_reject_rate == 0.0
    # one global threshold has to sit at 0.4 to catch the weakest defect and so rejects the 0.6 good part
    assert res.global_threshold == pytest.approx(0.4)
    assert res.global_measured.false_reject_rate == pytest.approx(0.5)
    assert "false-reject rate 0.0000" in res.message


def test_margin_centres_thresholds_in_the_free_band() -> None:
    m, d = toy()
    a, b = calibrate(m, d, target_recall=1.0, floor=0.05).thresholds
    assert a == pytest.approx(0.35)  # between good A 0.30 and defective A 0.40
    assert b == pytest.approx(0.70)  # between good B 0.60 and defective B 0.80


def test_floor_when_no_good_part_bounds_a_class() -> None:
    m = np.array([[0.9, 0.0], [0.0, 0.7], [0.0, 0.0]])
    d = np.array([True, True, False])
    res = calibrate(m, d, target_recall=1.0, floor=0.2)
    assert res.thresholds.tolist() == pytest.approx([0.2, 0.2])
    assert res.measured.false_reject_rate == 0.0


def test_unreachable_target_is_reported_not_raised() -> None:
    m = np.array([[0.9, 0.0], [0.1, 0.15], [0.0, 0.0]])  # the second defect never reaches the floor
    d = np.array([True, True, False])
    res = calibrate(m, d, target_recall=0.995, floor=0.25)
    assert not res.reachable
    assert res.thresholds.tolist() == [0.25, 0.25]
    assert "unreachable" in res.message
    assert res.measured.part_recall == pytest.approx(0.5)


def test_scores_below_the_floor_do_not_count() -> None:
    m = np.array([[0.5], [0.1]])
    d = np.array([True, False])
    res = calibrate(m, d, target_recall=1.0, floor=0.2)
    assert res.measured.false_reject_rate == 0.0  # the good part's 0.1 is below what the engine reports


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_meet_target_and_beat_one_threshold(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, nc = 120, 4
    d = rng.random(n) < 0.5
    m = rng.random((n, nc)) * (rng.random((n, nc)) < 0.5) * 0.6
    m[d] += rng.random((int(d.sum()), nc)) * (rng.random((int(d.sum()), nc)) < 0.5) * 0.4
    for target in (0.9, 0.99, 1.0):
        res = calibrate(m, d, target_recall=target, floor=0.01)
        assert res.reachable
        got = part_metrics(np.where(m >= 0.01, m, 0), d, res.thresholds)
        assert got == res.measured
        assert got.part_recall >= target - 1e-12
        assert got.false_reject_rate <= res.global_measured.false_reject_rate
        assert (res.thresholds >= 0.01).all() and (res.thresholds <= 1).all()


def test_two_class_result_is_optimal_on_a_small_grid() -> None:
    rng = np.random.default_rng(42)
    n = 40
    d = rng.random(n) < 0.5
    m = np.round(rng.random((n, 2)) * np.where(d[:, None], 1.0, 0.7), 2)
    res = calibrate(m, d, target_recall=0.9, floor=0.01)
    cands = np.unique(np.concatenate([m.ravel(), [0.01]]))
    cands = cands[cands >= 0.01]
    best = min(
        part_metrics(m, d, [a, b]).fp for a in cands for b in cands if part_metrics(m, d, [a, b]).part_recall >= 0.9
    )
    assert res.measured.fp == best


def test_bad_inputs() -> None:
    m, d = toy()
    with pytest.raises(DatasetError, match="no defective"):
        calibrate(m, np.zeros(len(d), bool))
    with pytest.raises(DatasetError):
        calibrate(m, d[:3])
    with pytest.raises(ConfigError):
        calibrate(m, d, target_recall=1.5)
    with pytest.raises(ConfigError):
        calibrate(m, d, floor=0.0)


# --------------------------------------------------------------------------- sidecar


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    p = tmp_path / "pcb-model.onnx"
    p.write_bytes(b"not really a model, but bytes to hash")
    return p


def test_sidecar_roundtrip(model_file: Path) -> None:
    m, d = toy()
    res = calibrate(m, d, floor=0.05)
    path = sidecar_path(model_file)
    assert path == model_file.parent / "pcb-model.thresholds.yaml"
    mid = model_file_id(model_file)
    assert len(mid) == 16
    save_thresholds(
        path,
        model_id=mid,
        names=["open", "short"],
        result=res,
        data={"path": "build/datasets/x", "split": "val"},
        model_name=model_file.name,
    )
    doc = yaml.safe_load(path.read_text())
    assert set(doc) >= {"model_id", "target_part_recall", "thresholds", "measured", "data", "created"}
    assert set(doc["measured"]) == {"part_recall", "false_reject_rate", "parts", "defective_parts", "good_parts"}
    t = load_thresholds(path, model_file)
    assert t.model_id == mid and t.target_part_recall == 0.995 and t.reachable
    assert t.vector(["open", "short"]).tolist() == pytest.approx(res.thresholds.tolist(), abs=1e-6)
    assert t.measured["parts"] == 8 and t.data["split"] == "val"
    with pytest.raises(ConfigError, match="missing"):
        t.vector(["open", "short", "spur"])
    with pytest.raises(AttributeError):
        t.model_id = "x"  # type: ignore[misc]


def test_sidecar_model_id_mismatch(model_file: Path) -> None:
    m, d = toy()
    path = sidecar_path(model_file)
    save_thresholds(path, model_id=model_file_id(model_file), names=["a", "b"], result=calibrate(m, d), data="toy")
    model_file.write_bytes(b"a retrained model")
    with pytest.raises(ConfigError, match="recalibrate"):
        load_thresholds(path, model_file)
    assert load_thresholds(path, model_file, check_model_id=False).thresholds.keys() == {"a", "b"}
    assert load_thresholds(path).data == {"description": "toy"}


def test_auto_sidecar_is_the_models_own_or_none(model_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`auto` (decision rules, eval, quantize): the sidecar beside the model when made for it."""
    from edge.decision import DecisionConfig, compile_rules
    from edge.thresholds import auto_sidecar
    from edge.training.evaluate import resolve_thresholds

    assert auto_sidecar(model_file) is None and auto_sidecar(None) is None
    m, d = toy()
    res = calibrate(m, d, floor=0.05)
    path = sidecar_path(model_file)
    save_thresholds(path, model_id=model_file_id(model_file), names=["a", "b"], result=res, data="toy")
    found = auto_sidecar(model_file)
    assert found is not None and found[1] == path
    assert found[0].vector(["a", "b"]).tolist() == pytest.approx(res.thresholds.tolist(), abs=1e-6)
    # the service's rules and eval take the same thresholds from it
    rules = compile_rules(DecisionConfig(min_confidence=0.9), ["a", "b"], model_file)
    assert rules.min_conf.tolist() == pytest.approx(res.thresholds.tolist(), abs=1e-6)
    vector, source = resolve_thresholds("auto", model_file, ["a", "b"], 0.9)
    assert source == str(path) and vector.tolist() == pytest.approx(res.thresholds.tolist(), abs=1e-6)

    model_file.write_bytes(b"a retrained model")  # the sidecar is another model's now: ignored, said so
    with caplog.at_level("WARNING", logger="edge.thresholds"):
        assert auto_sidecar(model_file) is None
    assert "ignoring thresholds sidecar" in caplog.text and "recalibrate" in caplog.text
    assert (
        compile_rules(DecisionConfig(min_confidence=0.9), ["a", "b"], model_file).min_conf.tolist()
        == [pytest.approx(0.9)] * 2
    )
    assert resolve_thresholds("auto", model_file, ["a", "b"], 0.9)[1] == "single threshold 0.9"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- just\n- a list\n", "mapping"),
        ("model_id: abc\nthresholds: {a: 0.5}\n", "target_part_recall"),
        ("model_id: abc\ntarget_part_recall: 0.99\n", "thresholds"),
        ("model_id: abc\ntarget_part_recall: 0.99\nthresholds: {a: 1.5}\n", "within 0..1"),
        ("model_id: abc\ntarget_part_recall: 0.99\nthresholds: {a: high}\n", "within 0..1"),
        ("model_id: abc\ntarget_part_recall: 0.99\nthresholds: {}\n", "non-empty"),
        ("model_id: 12\ntarget_part_recall: 0.99\nthresholds: {a: 0.5}\n", "model_id"),
        ("model_id: abc\ntarget_part_recall: x\nthresholds: {a: 0.5}\n", "not a number"),
        ("model_id: [unclosed\n", "YAML"),
    ],
)
def test_malformed_sidecars(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "m.thresholds.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_thresholds(p)


def test_missing_sidecar(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_thresholds(tmp_path / "nope.thresholds.yaml")


def test_cross_fit_scores_each_group_with_thresholds_fitted_without_it(model_file: Path) -> None:
    """Group a: defect 0.9, good 0.2; group b: defect 0.5, good 0.6 (one class, target 1.0)."""
    m = np.array([[0.9], [0.2], [0.5], [0.6]])
    d = np.array([True, False, True, False])
    groups = ["a", "a", "b", "b"]
    inside = calibrate(m, d, target_recall=1.0, floor=0.05)
    assert (inside.measured.part_recall, inside.measured.false_reject_rate) == (1.0, 0.5)  # fitted to these parts

    crossed = cross_fit(m, d, groups, target_recall=1.0, floor=0.05)
    by_group = {f.group: f for f in crossed.folds}
    # without a (fitted on b: the defect at 0.5 sits below b's good part, so the floor): a is all rejected
    assert by_group["a"].thresholds.tolist() == [0.05]
    assert (by_group["a"].measured.tp, by_group["a"].measured.fp) == (1, 1)
    # without b (fitted on a: midway between a's good 0.2 and defect 0.9): b's defect slips through
    assert by_group["b"].thresholds.tolist() == pytest.approx([0.55])
    assert (by_group["b"].measured.tp, by_group["b"].measured.fp) == (0, 1)
    pooled = crossed.pooled
    assert (pooled.parts, pooled.defective_parts, pooled.good_parts) == (4, 2, 2)
    assert (pooled.part_recall, pooled.false_reject_rate) == (0.5, 1.0)  # the honest figure

    path = model_file.parent / "x.thresholds.yaml"
    save_thresholds(path, model_id="0" * 16, names=["open"], result=inside, data="toy", cross_fitted=crossed)
    doc = yaml.safe_load(path.read_text())
    assert doc["cross_fitted"] == {"part_recall": 0.5, "false_reject_rate": 1.0, "groups": ["a", "b"]}
    assert load_thresholds(path).vector(["open"]).tolist() == pytest.approx(inside.thresholds.tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_fit_folds_are_calibrations_of_the_complement(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 90
    d = rng.random(n) < 0.5
    m = np.where(d[:, None], rng.uniform(0.3, 1.0, (n, 3)), rng.uniform(0.0, 0.7, (n, 3)))
    groups = [f"g{k % 3}" for k in range(n)]
    crossed = cross_fit(m, d, groups, target_recall=0.9, floor=0.1)
    assert [f.group for f in crossed.folds] == ["g0", "g1", "g2"]
    g = np.asarray(groups)
    total = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for fold in crossed.folds:
        held = g == fold.group
        want = calibrate(m[~held], d[~held], 0.9, floor=0.1)  # fitted without the held-out group
        np.testing.assert_array_equal(fold.thresholds, want.thresholds)
        # the held-out parts counted here, not by part_metrics: rejected where any class reaches its threshold
        rejected, defective = (m[held] >= want.thresholds).any(axis=1), d[held]
        counts = {
            "tp": int((rejected & defective).sum()),
            "fn": int((~rejected & defective).sum()),
            "fp": int((rejected & ~defective).sum()),
            "tn": int((~rejected & ~defective).sum()),
        }
        assert {k: getattr(fold.measured, k) for k in counts} == counts
        total = {k: total[k] + v for k, v in counts.items()}
    pooled = crossed.pooled
    assert {k: getattr(pooled, k) for k in total} == total
    assert (pooled.parts, pooled.defective_parts, pooled.good_parts) == (n, int(d.sum()), int((~d).sum()))


def test_cross_fit_refuses_what_it_cannot_fit() -> None:
    m = np.array([[0.9], [0.2], [0.5], [0.6]])
    d = np.array([True, False, True, False])
    with pytest.raises(DatasetError, match="at least 2 groups"):
        cross_fit(m, d, ["a"] * 4)
    with pytest.raises(DatasetError, match="3 group labels for 4 parts"):
        cross_fit(m, d, ["a", "a", "b"])
    with pytest.raises(DatasetError, match="without group 'a' no defective part"):
        cross_fit(m, np.array([True, False, False, False]), ["a", "a", "b", "b"])
