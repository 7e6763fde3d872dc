"""The service's control and read model on a real pipeline (replay camera, ONNX Runtime): halt,
single, resume; decision swaps validated, applied between frames, listened to and revertible;
recipes swapping the model; the snapshot; the I/O loop; the line-geometry budget."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from cameras.base import Frame
from edge.app import Service, build_service
from edge.config import parse_config
from edge.errors import ConfigError
from edge.ioloop import IoLoop
from edge.verdict import FailsafeReason, Verdict, VerdictKind


def service(
    model: Path, images: Path, state: Path, recipes: dict[str, Any] | None = None, frames: int | None = None
) -> Service:
    text = yaml.safe_dump(
        {
            "state_dir": str(state),
            "cameras": [
                {"type": "replay", "name": "cam", "path": str(images), "rate_ppm": 0, "max_in_flight": 1, "loop": True}
            ],
            "engine": {"type": "onnxruntime", "model": str(model), "intra_op_threads": 1, "warmup": 1},
            "pipeline": {"budget_ms": 3000, "ring_slots": 4},
            "sinks": [],
            "metrics": {"port": 0},
            "recipes": recipes or {},
        }
    )
    return build_service(parse_config(text, "<control>", base_dir=model.parent), max_frames=frames)


def until(pred: Any, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_halt_single_resume_every_frame_still_gets_one_verdict(
    model_path: Path, demo_images: Path, tmp_path: Path
) -> None:
    svc = service(model_path, demo_images, tmp_path)
    got: list[Verdict] = []
    svc.pipeline.subscribe(lambda v, _f: got.append(v), "test")
    svc.start(serve_metrics=False)
    ctl = svc.control
    assert ctl is not None
    def after(first_id: int) -> list[Verdict]:
        return sorted((v for v in list(got) if v.frame_id > first_id), key=lambda v: v.frame_id)

    try:
        assert until(lambda: len(got) >= 3)
        ctl.halt(who="op")
        assert svc.snapshot().state == "halted"
        mark = svc.pipeline.stats.frames_in + 1  # frames after this one were admitted halted
        assert until(lambda: len(after(mark)) >= 5)
        assert all(v.failsafe_reason is FailsafeReason.HALTED for v in after(mark)[:5])
        # no rule judged them: they name the rules in force
        assert all((v.decision_set, v.rules_id) == ("default", ctl.rules().rules_id) for v in after(mark)[:5])
        mark = svc.pipeline.stats.frames_in - 2  # all of these and earlier were admitted halted
        ctl.single(2, who="plc")
        assert until(lambda: svc.pipeline.mode() == "halted")
        assert until(lambda: len(after(mark)) >= 8)
        judged = [v for v in after(mark) if v.failsafe_reason is not FailsafeReason.HALTED]
        assert len(judged) == 2 and all(v.verdict is not VerdictKind.FAILSAFE for v in judged)
        ctl.resume(who="op")
        mark = svc.pipeline.stats.frames_in + 1
        assert until(lambda: len(after(mark)) >= 4)
        assert all(v.failsafe_reason is not FailsafeReason.HALTED for v in after(mark)[:4])
    finally:
        summary = svc.stop()
    per_frame = Counter(v.frame_id for v in got)
    assert set(per_frame.values()) == {1} and len(got) == summary["frames_in"]


def test_decision_swap_is_validated_applied_listened_and_revertible(
    model_path: Path, demo_images: Path, tmp_path: Path
) -> None:
    svc = service(model_path, demo_images, tmp_path)
    got: list[Verdict] = []
    changes: list[tuple[str, Any, Any, str]] = []
    svc.pipeline.subscribe(lambda v, _f: got.append(v), "test")
    ctl = svc.control
    assert ctl is not None
    ctl.on_change(lambda kind, before, after, who: changes.append((kind, before, after, who)))
    svc.start(serve_metrics=False)
    try:
        with pytest.raises(ConfigError, match="not classes of the model"):
            ctl.set_decision({"classes": {"shrot": {"min_confidence": 0.3}}}, who="eng")
        with pytest.raises(ConfigError, match="min_confidence"):
            ctl.set_decision({"min_confidence": 7}, who="eng")
        assert changes == [] and ctl.decision()["min_confidence"] == 0.25
        # nothing can reject any more: every class ignored
        names = svc.info.names
        applied = ctl.set_decision({"classes": {n: {"ignore": True} for n in names}}, who="eng")
        assert applied["classes"][names[0]]["ignore"] is True
        n = len(got)
        assert until(lambda: len(got) >= n + 12)
        assert all(v.verdict is VerdictKind.PASS for v in got[n + 2 :])  # a frame in flight may use the old rules
        ctl.revert_decision(who="eng")
        assert ctl.decision()["classes"] == {}
        kinds = [c[0] for c in changes]
        assert kinds == ["decision", "decision"] and changes[0][3] == "eng"
        with pytest.raises(ConfigError, match="no earlier rules"):
            ctl.revert_decision(who="eng")
    finally:
        svc.stop()


def test_recipe_swaps_the_model_between_frames(
    model_path: Path, demo_images: Path, tmp_path: Path
) -> None:
    relu = model_path.with_name("pcb-yolo11n-relu-320.onnx")
    recipes = {"relu": {"model": relu.name, "description": "ReLU sibling"}}
    svc = service(model_path, demo_images, tmp_path, recipes=recipes)
    got: list[Verdict] = []
    svc.pipeline.subscribe(lambda v, _f: got.append(v), "test")
    ctl = svc.control
    assert ctl is not None
    svc.start(serve_metrics=False)
    try:
        assert ctl.recipes() == ["default", "relu"]
        with pytest.raises(ConfigError, match="unknown recipe"):
            ctl.activate_recipe("nope")
        assert until(lambda: len(got) >= 2)
        first_model = got[0].model_id
        ctl.activate_recipe("relu", who="op")
        n = len(got)
        assert until(lambda: len(got) >= n + 4)
        after = got[n + 1 :]
        assert {v.recipe for v in after} == {"relu"} and all(v.model_id != first_model for v in after)
        snap = svc.snapshot()
        assert snap.recipe == "relu" and snap.engine.model_path.endswith(relu.name)
    finally:
        summary = svc.stop()
    assert summary["recipe"] == "relu"


def test_snapshot_is_a_plain_read_model(
    model_path: Path, demo_images: Path, tmp_path: Path
) -> None:
    svc = service(model_path, demo_images, tmp_path, frames=12)
    seen_frames: list[Frame] = []
    svc.pipeline.subscribe(lambda v, f: seen_frames.append(f), "test")
    svc.start(serve_metrics=False)
    try:
        svc.pipeline.wait(60)
        d = svc.snapshot().to_dict()
    finally:
        svc.stop()
    assert d["stats"]["decided_total"] == 12 and d["stats"]["parts_per_min"] > 0
    assert d["engine"]["names"] == list(svc.info.names) and d["budget_ms"] == 3000
    assert d["cameras"][0]["name"] == "cam" and d["cameras"][0]["frames_in"] == 12
    assert d["workers"]["inference_alive"] and d["workers"]["inference_heartbeat_age_s"] < 30
    assert d["stats"]["latency_ms"]["p99"] is not None and "ready" in d and isinstance(d["not_ready"], list)
    assert len(seen_frames) == 12


def test_io_loop_runs_coroutines_from_other_threads() -> None:
    loop = IoLoop()
    loop.start()
    try:

        async def add(a: int, b: int) -> int:
            await asyncio.sleep(0.01)
            return a + b

        assert loop.run_sync(add(2, 3), timeout=5) == 5
        box: list[int] = []
        loop.call_soon(box.append, 1)
        assert until(lambda: box == [1], 5)
    finally:
        loop.stop()
    assert not loop.running
    loop.call_soon(box.append, 2)  # a stopped loop ignores calls
    assert box == [1]


def test_line_geometry_derives_the_budget() -> None:
    base = {"cameras": [{"type": "replay", "path": "x"}], "engine": {"type": "onnxruntime", "model": "m.onnx"}}
    line = {"conveyor_speed_mm_s": 500, "camera_to_ejector_mm": 150, "ejector_actuation_ms": 40, "safety_margin_ms": 10}
    cfg = parse_config(yaml.safe_dump({**base, "pipeline": {"line": line}}), "<line>")
    assert cfg.app.pipeline.budget_ms == pytest.approx(300 - 40 - 10)
    too_fast = {**line, "conveyor_speed_mm_s": 5000}
    with pytest.raises(ConfigError, match="no time is left"):
        parse_config(yaml.safe_dump({**base, "pipeline": {"line": too_fast}}), "<line>")
