"""The difference-evidence rule of the decision: a golden-reference detection without a real
difference against its reference inside its box does not count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from edge.decision import DecisionConfig, DifferenceEvidenceConfig, compile_rules, decide, describe
from edge.errors import ConfigError
from edge.verdict import Detections, VerdictKind

NAMES = ("open", "short")


def dets(*rows: tuple[int, float, float, float, float, float]) -> Detections:
    a = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, 2:6].copy(), a[:, 1].copy(), a[:, 0].astype(np.int32))


class Asked:
    """An evidence function that answers from a table and records what it was asked."""

    def __init__(self, answers: dict[tuple[float, ...], int]) -> None:
        self.answers = answers
        self.asked: list[tuple[float, ...]] = []

    def __call__(self, boxes: np.ndarray) -> np.ndarray:
        keys = [tuple(float(v) for v in b) for b in boxes]
        self.asked.extend(keys)
        return np.array([self.answers[k] for k in keys], np.int64)


def test_a_detection_without_difference_does_not_count() -> None:
    rules = compile_rules(DecisionConfig(min_confidence=0.5), NAMES)
    assert rules.min_evidence_px == 4 and rules.evidence_settings == (1, 48, 2)
    evidence = Asked({(10.0, 10.0, 30.0, 30.0): 3, (50.0, 50.0, 60.0, 60.0): 40})
    d = decide(dets((0, 0.9, 10, 10, 30, 30)), rules, evidence)
    assert d.verdict is VerdictKind.PASS and d.defects == 0
    assert len(d.detections) == 1  # still recorded
    d = decide(dets((0, 0.9, 10, 10, 30, 30), (1, 0.8, 50, 50, 60, 60)), rules, evidence)
    assert d.verdict is VerdictKind.REJECT and d.defects == 1
    assert [r.detection.name for r in d.reasons if r.detection is not None] == ["short"]
    assert "40 px differ from the reference" in d.reasons[0].message


def test_evidence_is_asked_only_about_detections_that_pass_every_other_filter() -> None:
    rules = compile_rules(DecisionConfig(min_confidence=0.5, ignore_zones=[(0, 0, 5, 5)]), NAMES)
    evidence = Asked({(10.0, 10.0, 30.0, 30.0): 100})
    d = decide(dets((0, 0.3, 40, 40, 50, 50), (1, 0.9, 1, 1, 3, 3), (0, 0.9, 10, 10, 30, 30)), rules, evidence)
    assert d.verdict is VerdictKind.REJECT
    assert evidence.asked == [(10.0, 10.0, 30.0, 30.0)]
    nothing = Asked({})
    assert decide(dets((0, 0.3, 40, 40, 50, 50)), rules, nothing).verdict is VerdictKind.PASS
    assert nothing.asked == []


def test_off_or_without_evidence_the_rule_does_not_apply() -> None:
    off = compile_rules(DecisionConfig(difference_evidence=DifferenceEvidenceConfig(enabled=False)), NAMES)
    assert off.min_evidence_px == 0
    none = Asked({})
    assert decide(dets((0, 0.9, 10, 10, 30, 30)), off, none).verdict is VerdictKind.REJECT
    assert none.asked == []
    # a frame-only model has no reference: the caller passes no evidence, the rule cannot apply
    on = compile_rules(DecisionConfig(), NAMES)
    assert decide(dets((0, 0.9, 10, 10, 30, 30)), on).verdict is VerdictKind.REJECT
    strict = compile_rules(
        DecisionConfig(difference_evidence=DifferenceEvidenceConfig(min_pixels=50, tolerance_px=2, level=30)), NAMES
    )
    assert strict.min_evidence_px == 50 and strict.evidence_settings == (2, 30, 2)
    assert decide(dets((0, 0.9, 10, 10, 30, 30)), strict, Asked({(10.0, 10.0, 30.0, 30.0): 49})).defects == 0
    assert "min_confidence" in describe(strict)


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError):
        DecisionConfig.model_validate({"difference_evidence": {"min_pixels": 0}})
    with pytest.raises(ValidationError):
        DecisionConfig.model_validate({"difference_evidence": {"tolerance": 1}})
    cfg = DecisionConfig.model_validate({"difference_evidence": {"enabled": False}})
    assert cfg.difference_evidence.enabled is False


def test_min_pixels_from_the_sidecar_unless_the_config_sets_it(tmp_path: Path) -> None:
    from edge.engines.model import model_id_of

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    side = tmp_path / "m.thresholds.yaml"
    doc = {"model_id": model_id_of(model), "target_part_recall": 0.995, "thresholds": {"open": 0.5, "short": 0.5}}
    side.write_text(yaml.safe_dump({**doc, "difference_evidence": {"min_pixels": 64}}))
    assert compile_rules(DecisionConfig(), NAMES, model).min_evidence_px == 64  # chosen with the thresholds
    explicit = DecisionConfig(difference_evidence=DifferenceEvidenceConfig(min_pixels=8))
    assert compile_rules(explicit, NAMES, model).min_evidence_px == 8  # the config's own value wins
    off = DecisionConfig(difference_evidence=DifferenceEvidenceConfig(enabled=False))
    assert compile_rules(off, NAMES, model).min_evidence_px == 0
    # a section that went through the API (dumped and validated again) still defers to the sidecar
    again = DecisionConfig.model_validate(DecisionConfig().model_dump(mode="json"))
    assert compile_rules(again, NAMES, model).min_evidence_px == 64
    assert compile_rules(DecisionConfig(thresholds_file=None), NAMES, model).min_evidence_px == 4  # no sidecar
    named = DecisionConfig(thresholds_file=str(side))
    assert compile_rules(named, NAMES, model).min_evidence_px == 64
    side.write_text(yaml.safe_dump(doc))  # a sidecar without the key: the default
    assert compile_rules(DecisionConfig(), NAMES, model).min_evidence_px == 4
    for bad in (0, "64", 2.5, True):
        side.write_text(yaml.safe_dump({**doc, "difference_evidence": {"min_pixels": bad}}))
        with pytest.raises(ConfigError, match="difference_evidence.min_pixels"):
            compile_rules(named, NAMES, model)
