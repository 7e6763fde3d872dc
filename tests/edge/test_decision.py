from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.decision import ClassRule, DecisionConfig, compile_rules, decide
from edge.errors import ConfigError
from edge.verdict import Detections, VerdictKind

NAMES = ("open", "short", "spur")


def dets(*rows: tuple[int, float, float, float, float, float]) -> Detections:
    """rows: (cls, conf, x1, y1, x2, y2)"""
    if not rows:
        return Detections.empty()
    a = np.array(rows, np.float32)
    return Detections(a[:, 2:6].copy(), a[:, 1].copy(), a[:, 0].astype(np.int32))


def test_no_detections_pass() -> None:
    d = decide(Detections.empty(), compile_rules(DecisionConfig(), NAMES))
    assert d.verdict is VerdictKind.PASS and d.reasons == ()


def test_detection_above_threshold_rejects_with_reason() -> None:
    d = decide(dets((1, 0.8, 10, 10, 30, 30)), compile_rules(DecisionConfig(min_confidence=0.5), NAMES))
    assert d.verdict is VerdictKind.REJECT
    assert len(d.reasons) == 1
    r = d.reasons[0]
    assert r.rule == "max_count" and r.detection is not None and r.detection.name == "short"
    assert "short" in r.message and "0.800" in r.message


def test_below_threshold_passes_but_is_recorded() -> None:
    d = decide(dets((1, 0.3, 10, 10, 30, 30)), compile_rules(DecisionConfig(min_confidence=0.5), NAMES))
    assert d.verdict is VerdictKind.PASS
    assert len(d.detections) == 1 and d.defects == 0


def test_per_class_threshold_and_ignore() -> None:
    cfg = DecisionConfig(
        min_confidence=0.5,
        classes={"open": ClassRule(min_confidence=0.9), "spur": ClassRule(ignore=True)},
    )
    rules = compile_rules(cfg, NAMES)
    assert decide(dets((0, 0.8, 0, 0, 10, 10)), rules).verdict is VerdictKind.PASS
    assert decide(dets((0, 0.95, 0, 0, 10, 10)), rules).verdict is VerdictKind.REJECT
    assert decide(dets((2, 0.99, 0, 0, 10, 10)), rules).verdict is VerdictKind.PASS
    assert rules.min_confidence() == pytest.approx(0.5)


def test_min_area() -> None:
    rules = compile_rules(DecisionConfig(min_area_px=100), NAMES)
    assert decide(dets((0, 0.9, 0, 0, 5, 5)), rules).verdict is VerdictKind.PASS  # 25 px2
    assert decide(dets((0, 0.9, 0, 0, 20, 20)), rules).verdict is VerdictKind.REJECT


def test_max_count_per_class_and_total() -> None:
    rules = compile_rules(DecisionConfig(max_count=1), NAMES)
    one = dets((0, 0.9, 0, 0, 10, 10))
    two = dets((0, 0.9, 0, 0, 10, 10), (0, 0.9, 50, 50, 60, 60))
    mixed = dets((0, 0.9, 0, 0, 10, 10), (1, 0.9, 50, 50, 60, 60))
    assert decide(one, rules).verdict is VerdictKind.PASS
    d = decide(two, rules)
    assert d.verdict is VerdictKind.REJECT and len(d.reasons) == 2
    assert decide(mixed, rules).verdict is VerdictKind.PASS
    total = compile_rules(DecisionConfig(max_count=1, max_total=1), NAMES)
    d = decide(mixed, total)
    assert d.verdict is VerdictKind.REJECT and {r.rule for r in d.reasons} == {"max_total"}


def test_roi_and_ignore_zone_by_centre() -> None:
    rules = compile_rules(
        DecisionConfig(regions_of_interest=[(0, 0, 100, 100)], ignore_zones=[(40, 40, 60, 60)]), NAMES
    )
    assert decide(dets((0, 0.9, 200, 200, 220, 220)), rules).verdict is VerdictKind.PASS  # outside ROI
    assert decide(dets((0, 0.9, 45, 45, 55, 55)), rules).verdict is VerdictKind.PASS  # in ignore zone
    assert decide(dets((0, 0.9, 10, 10, 20, 20)), rules).verdict is VerdictKind.REJECT
    # box straddling the ROI edge counts by its centre (95+110)/2 = 102.5 -> outside
    assert decide(dets((0, 0.9, 95, 10, 110, 20)), rules).verdict is VerdictKind.PASS


def test_invalid_zone_rejected() -> None:
    with pytest.raises(ValueError):
        DecisionConfig(ignore_zones=[(10, 10, 5, 20)])


def test_unknown_class_in_config() -> None:
    with pytest.raises(ConfigError, match="opne"):
        compile_rules(DecisionConfig(classes={"opne": ClassRule(min_confidence=0.3)}), NAMES)


def write_sidecar(path: Path, model: Path | None, thresholds: dict[str, float]) -> None:
    from edge.engines.model import model_id_of

    doc = {
        "model_id": model_id_of(model) if model is not None else "0" * 16,
        "target_part_recall": 0.995,
        "thresholds": thresholds,
    }
    path.write_text(yaml.safe_dump(doc))


def test_sidecar_thresholds_auto_and_config_override(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    write_sidecar(tmp_path / "m.thresholds.yaml", model, {"open": 0.7, "short": 0.2, "spur": 0.3})
    rules = compile_rules(DecisionConfig(classes={"short": ClassRule(min_confidence=0.4)}), NAMES, model)
    assert rules.min_conf.tolist() == pytest.approx([0.7, 0.4, 0.3])
    assert rules.threshold_source.endswith("m.thresholds.yaml")
    none = compile_rules(DecisionConfig(thresholds_file=None), NAMES, model)
    assert none.min_conf.tolist() == pytest.approx([0.25, 0.25, 0.25])


def test_sidecar_for_another_model_is_ignored_in_auto_and_refused_when_named(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    write_sidecar(tmp_path / "m.thresholds.yaml", None, {"open": 0.7, "short": 0.2, "spur": 0.3})
    rules = compile_rules(DecisionConfig(), NAMES, model)
    assert rules.threshold_source == "config"
    with pytest.raises(ConfigError, match="recalibrate"):
        compile_rules(DecisionConfig(thresholds_file=str(tmp_path / "m.thresholds.yaml")), NAMES, model)


def test_sidecar_bad_class(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    write_sidecar(p, None, {"bogus": 0.5})
    with pytest.raises(ConfigError, match="bogus"):
        compile_rules(DecisionConfig(thresholds_file=str(p)), NAMES)


def test_rules_fingerprint_names_what_decides_not_how_it_is_written() -> None:
    plain = compile_rules(DecisionConfig(min_confidence=0.3, thresholds_file=None), NAMES)
    spelled = compile_rules(
        DecisionConfig(
            min_confidence=0.9,
            thresholds_file=None,
            classes={n: ClassRule(min_confidence=0.3) for n in NAMES},
        ),
        NAMES,
    )
    assert len(plain.rules_id) == 12 and plain.rules_id == spelled.rules_id  # the same thresholds in force
    stricter = compile_rules(
        DecisionConfig(min_confidence=0.3, thresholds_file=None, classes={"spur": ClassRule(min_confidence=0.31)}),
        NAMES,
    )
    zoned = compile_rules(DecisionConfig(min_confidence=0.3, thresholds_file=None, ignore_zones=[[0, 0, 5, 5]]), NAMES)
    assert len({plain.rules_id, stricter.rules_id, zoned.rules_id}) == 3
    assert plain.set_name == "default"
