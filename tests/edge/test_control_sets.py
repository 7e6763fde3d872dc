"""Decision sets on a real service (replay camera, ONNX Runtime): named threshold sets of the config
are applied through the decision path (validated, compiled, listened to, revertible), and the
active set's name says honestly what is in force (a set, `custom`, or a recipe's own rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge.app import Service, build_service
from edge.config import parse_config
from edge.errors import ConfigError
from edge.verdict import Verdict
from tests.plc.peers import wait_until

NO_SIDECAR = {"thresholds_file": None}  # the model's calibrated sidecar would override min_confidence
SETS = {
    "strict": {"min_confidence": 0.1, **NO_SIDECAR},
    "loose": {"min_confidence": 0.95, "max_count": 2, **NO_SIDECAR},
}


def config(model: Path, images: Path, state: Path, **over: Any) -> str:
    cfg: dict[str, Any] = {
        "state_dir": str(state),
        "cameras": [
            {"type": "replay", "name": "cam", "path": str(images), "rate_ppm": 0, "max_in_flight": 1, "loop": True}
        ],
        "engine": {"type": "onnxruntime", "model": str(model), "intra_op_threads": 1, "warmup": 1},
        "pipeline": {"budget_ms": 3000, "ring_slots": 4},
        "sinks": [],
        "metrics": {"port": 0},
        "decision": NO_SIDECAR,
        "decision_sets": SETS,
    }
    cfg.update(over)
    return yaml.safe_dump(cfg)


def service(model: Path, images: Path, state: Path, **over: Any) -> Service:
    return build_service(parse_config(config(model, images, state, **over), "<sets>", base_dir=model.parent))


def thresholds(svc: Service) -> set[float]:
    """The per-class thresholds the compiled rules in force apply."""
    assert svc.control is not None
    return {round(float(x), 3) for x in np.asarray(svc.control.rules().min_conf)}


def test_sets_apply_like_decisions_and_the_active_name_is_honest(
    model_path: Path, demo_images: Path, tmp_path: Path
) -> None:
    svc = service(model_path, demo_images, tmp_path)
    ctl = svc.control
    assert ctl is not None
    changes: list[tuple[str, Any, Any, str]] = []
    ctl.on_change(lambda kind, before, after, who: changes.append((kind, before, after, who)))
    svc.start(serve_metrics=False)
    try:
        assert ctl.decision_sets() == ["default", "loose", "strict"]
        assert ctl.active_decision_set() == "default"
        with pytest.raises(ConfigError, match="unknown decision set 'nope'"):
            ctl.activate_decision_set("nope", who="op")
        assert changes == [] and ctl.active_decision_set() == "default"

        applied = ctl.activate_decision_set("loose", who="op")
        assert applied["min_confidence"] == 0.95 and applied["max_count"] == 2
        assert ctl.decision()["min_confidence"] == 0.95 and thresholds(svc) == {0.95}
        assert ctl.active_decision_set() == "loose"
        assert [(k, w) for k, _, _, w in changes] == [("decision", "op"), ("decision_set", "op")]
        assert changes[1][1:3] == ("default", "loose")
        ctl.activate_decision_set("loose", who="op")  # in force already: nothing recorded
        assert len(changes) == 2

        ctl.set_decision({"min_confidence": 0.5, **NO_SIDECAR}, who="eng")  # by hand: no set has these rules
        assert ctl.active_decision_set() == "custom" and thresholds(svc) == {0.5}
        ctl.set_decision(SETS["strict"], who="eng")  # by hand, but exactly a set's rules
        assert ctl.active_decision_set() == "strict"
        ctl.revert_decision(who="eng")
        assert ctl.active_decision_set() == "custom" and ctl.decision()["min_confidence"] == 0.5
        ctl.revert_decision(who="eng")
        assert ctl.active_decision_set() == "loose" and thresholds(svc) == {0.95}
        ctl.activate_decision_set("default", who="op")
        assert ctl.active_decision_set() == "default" and ctl.decision()["min_confidence"] == 0.25
    finally:
        svc.stop()


def test_recipes_name_their_own_rules(model_path: Path, demo_images: Path, tmp_path: Path) -> None:
    relu = model_path.with_name("pcb-yolo11n-relu-320.onnx").name
    recipes = {"own": {"model": relu, "decision": {"min_confidence": 0.4, **NO_SIDECAR}}, "plain": {"model": relu}}
    svc = service(model_path, demo_images, tmp_path, recipes=recipes)
    ctl = svc.control
    assert ctl is not None
    svc.start(serve_metrics=False)
    try:
        ctl.activate_decision_set("strict", who="op")
        ctl.activate_recipe("own", who="op")
        assert ctl.active_decision_set() == "recipe:own" and thresholds(svc) == {0.4}
        ctl.activate_decision_set("loose", who="op")  # a set applies on top of the recipe's model
        assert ctl.active_decision_set() == "loose" and ctl.active_recipe() == "own"
        ctl.activate_recipe("plain", who="op")  # no rules of its own: the top-level ones
        assert ctl.active_decision_set() == "default" and thresholds(svc) == {0.25}
    finally:
        svc.stop()


def test_sets_are_checked_at_start(model_path: Path, demo_images: Path, tmp_path: Path) -> None:
    bad = {"typo": {"classes": {"shrot": {"min_confidence": 0.3}}}}
    with pytest.raises(ConfigError, match=r"decision_sets\.typo: .*not classes of the model"):
        service(model_path, demo_images, tmp_path, decision_sets=bad)
    for reserved in ("custom", "default", "recipe:x"):
        with pytest.raises(ConfigError, match="decision set name"):
            parse_config(config(model_path, demo_images, tmp_path, decision_sets={reserved: {}}), "<sets>")
    with pytest.raises(ConfigError, match="min_confidence"):
        parse_config(config(model_path, demo_images, tmp_path, decision_sets={"x": {"min_confidence": 3}}), "<sets>")


def test_verdicts_name_the_set_and_rules_that_judged_them(model_path: Path, demo_images: Path, tmp_path: Path) -> None:
    svc = service(model_path, demo_images, tmp_path)
    ctl = svc.control
    assert ctl is not None
    seen: list[Verdict] = []
    svc.pipeline.subscribe(lambda v, _f: seen.append(v), "test")
    svc.start(serve_metrics=False)
    try:
        assert wait_until(lambda: len(seen) >= 2, 60)
        default_id = ctl.rules().rules_id
        assert seen[0].decision_set == "default" and seen[0].rules_id == default_id
        ctl.activate_decision_set("loose", who="op")
        n = len(seen)
        assert wait_until(lambda: len(seen) >= n + 3, 60)
        loose_id = ctl.rules().rules_id
        assert loose_id != default_id
        after = seen[-1]  # judged after the swap: the set's name and its rules' fingerprint
        assert (after.decision_set, after.rules_id) == ("loose", loose_id)
        assert after.to_dict()["decision_set"] == "loose" and after.to_dict()["schema"] == 3
        for v in seen:  # every verdict names one of the two, never a mix
            assert (v.decision_set, v.rules_id) in {("default", default_id), ("loose", loose_id)}
        ctl.set_decision({"min_confidence": 0.5, **NO_SIDECAR}, who="eng")  # by hand: custom, its own id
        n = len(seen)
        assert wait_until(lambda: len(seen) >= n + 3, 60)
        assert seen[-1].decision_set == "custom" and seen[-1].rules_id not in (default_id, loose_id)
        ctl.set_decision(SETS["loose"], who="eng")  # by hand, exactly a set's rules: the same fingerprint
        assert ctl.rules().rules_id == loose_id and ctl.rules().set_name == "loose"
    finally:
        svc.stop()
