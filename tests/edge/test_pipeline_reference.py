"""Golden-reference inspection through the whole service: each frame is judged against its reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge.app import build_service
from edge.config import parse_config
from edge.engines.model import mark_reference_input
from edge.errors import ConfigError
from edge.verdict import Verdict, VerdictKind

SIZE = 32


def difference_detector(path: Path, *, reference: bool = True) -> Path:
    """A real ONNX model: one box whose 'defect' score is the mean of the model's first input
    channel, which for a reference composite (B, G, R = part, reference, difference; swapped to
    RGB by the engine) is the difference between the part and its reference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 1])
    nodes = [
        helper.make_node("Gather", ["images", "first"], ["diff"], axis=1),  # (1, 1, S, S)
        helper.make_node("ReduceMean", ["diff"], ["score"], axes=[2, 3], keepdims=0),  # (1, 1)
        helper.make_node("Unsqueeze", ["score", "last"], ["score3"]),  # (1, 1, 1)
        helper.make_node("Concat", ["box", "score3"], ["output0"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "first"),
        numpy_helper.from_array(np.array([2], np.int64), "last"),
        numpy_helper.from_array(np.array([[[16.0], [16.0], [8.0], [8.0]]], np.float32), "box"),
    ]
    graph = helper.make_graph(nodes, "difference", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    meta = {"task": "detect", "stride": "8", "imgsz": str([SIZE, SIZE]), "names": "{0: 'defect'}", "batch": "1"}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    if reference:
        mark_reference_input(path)
    return path


def grey(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((48, 64), value, np.uint8))
    return path


def service_config(model: Path, camera: dict[str, Any], **top: Any) -> str:
    return yaml.safe_dump(
        {
            "cameras": [{"type": "replay", "name": "line1", "rate_ppm": 0, "max_in_flight": 1, **camera}],
            "engine": {"type": "onnxruntime", "model": str(model), "warmup": 1},
            "decision": {"min_confidence": 0.5, "thresholds_file": None},
            "pipeline": {"budget_ms": 2000, "ring_slots": 4},
            "sinks": [],
            "metrics": {"port": 0},
            "frame_check": {"uniform": False},  # the test's parts are uniform grey on purpose
            **top,
        }
    )


def run_verdicts(text: str, frames: int, base_dir: Path) -> dict[str, VerdictKind]:
    service = build_service(parse_config(text, "<reference>", base_dir=base_dir), max_frames=frames)
    verdicts: list[Verdict] = []
    service.pipeline.subscribe(lambda v, _frame: verdicts.append(v), "test")
    service.start(serve_metrics=False)
    service.pipeline.wait(60)
    summary = service.stop()
    assert summary["frames_in"] == frames == len(verdicts) and summary["verdicts"]["failsafe"] == 0, summary
    return {v.part_id: v.verdict for v in verdicts}


def test_each_replayed_image_is_judged_against_its_own_reference(tmp_path: Path) -> None:
    model = difference_detector(tmp_path / "diff.onnx")
    for name, part, ref in (("same_white", 255, 255), ("lost_copper", 0, 255), ("extra_copper", 255, 0)):
        grey(tmp_path / "parts" / f"{name}.png", part)
        grey(tmp_path / "refs" / f"{name}.jpg", ref)  # paired by file stem, any image type
    camera = {"path": str(tmp_path / "parts"), "references": str(tmp_path / "refs"), "loop": False}
    verdicts = run_verdicts(service_config(model, camera), 3, tmp_path)
    # a white part on a white reference passes; the same white part on a black one is rejected
    assert verdicts == {
        "same_white": VerdictKind.PASS,
        "lost_copper": VerdictKind.REJECT,
        "extra_copper": VerdictKind.REJECT,
    }


def test_a_camera_fixed_reference_from_the_config(tmp_path: Path) -> None:
    model = difference_detector(tmp_path / "diff.onnx")
    grey(tmp_path / "parts" / "a_good.png", 200)
    grey(tmp_path / "parts" / "b_bad.png", 20)
    grey(tmp_path / "golden.png", 200)
    camera = {"path": str(tmp_path / "parts"), "loop": False}
    verdicts = run_verdicts(service_config(model, camera, references={"line1": "golden.png"}), 2, tmp_path)
    assert verdicts == {"a_good": VerdictKind.PASS, "b_bad": VerdictKind.REJECT}


def test_references_and_models_must_agree(tmp_path: Path) -> None:
    grey(tmp_path / "parts" / "a.png", 200)
    grey(tmp_path / "golden.png", 200)
    camera = {"path": str(tmp_path / "parts")}
    ref_model = difference_detector(tmp_path / "diff.onnx")
    with pytest.raises(ConfigError, match=r"compares each part with its golden reference.*\['line1'\]"):
        build_service(parse_config(service_config(ref_model, camera), "<x>"))
    plain = difference_detector(tmp_path / "plain.onnx", reference=False)
    text = service_config(plain, camera, references={"line1": str(tmp_path / "golden.png")})
    with pytest.raises(ConfigError, match="takes camera frames alone"):
        build_service(parse_config(text, "<x>"))
    text = service_config(plain, {**camera, "references": str(tmp_path / "refs")})
    with pytest.raises(ConfigError, match=r"cameras \['line1'\]: references: .* takes camera frames alone"):
        build_service(parse_config(text, "<x>"))
    with pytest.raises(ConfigError, match=r"references name cameras that do not exist: \['line9'\]"):
        parse_config(service_config(ref_model, camera, references={"line9": "golden.png"}), "<x>")
    text = service_config(ref_model, camera, references={"line1": str(tmp_path / "missing.png")})
    with pytest.raises(ConfigError, match="references.line1: cannot read image"):
        build_service(parse_config(text, "<x>"))


def test_replay_needs_a_reference_for_every_image(tmp_path: Path) -> None:
    from cameras.replay import ReplayCameraConfig

    grey(tmp_path / "parts" / "a.png", 200)
    grey(tmp_path / "parts" / "b.png", 200)
    grey(tmp_path / "refs" / "a.png", 200)
    cam = ReplayCameraConfig(name="c", path="parts", references="refs", rate_ppm=0, labels="none").build(tmp_path)
    cam.open()  # a missing reference is that part's problem, not the line's: its frame is an error frame
    try:
        gen = cam.frames()
        a, b = next(gen), next(gen)
        gen.close()
    finally:
        cam.close()
    assert a.error is None and a.reference is not None
    assert b.error is not None and "no reference for b.png" in b.error and b.array.size == 0


def test_reference_by_stem_or_its_longest_prefix(tmp_path: Path) -> None:
    from cameras.replay import reference_for

    refs = {stem: tmp_path / f"{stem}.png" for stem in ("board7", "board7_0042", "x_1_test")}
    assert reference_for("board7_0042_test", refs) == refs["board7_0042"]
    assert reference_for("board7_0043_temp", refs) == refs["board7"]
    assert reference_for("x_1_test", refs) == refs["x_1_test"]
    assert reference_for("board8_0042", refs) is None
    assert reference_for("_board7", refs) is None


def test_composites_reuse_their_buffers(tmp_path: Path) -> None:
    """The inspector composes every frame of a size into the same preallocated buffers (the
    compose step itself allocates nothing given them: tests/edge/test_reference.py)."""
    import time

    from cameras.base import Frame

    model = difference_detector(tmp_path / "diff.onnx")
    grey(tmp_path / "parts" / "a.png", 0)
    golden = grey(tmp_path / "golden.png", 255)
    text = service_config(model, {"path": str(tmp_path / "parts")}, references={"line1": str(golden)})
    service = build_service(parse_config(text, "<ref>", base_dir=tmp_path))
    inspector = service.pipeline.inspector
    seen = []
    for value in (0, 255, 0):
        frame = Frame(np.full((48, 64), value, np.uint8), value, f"p{value}", "line1", time.monotonic_ns())
        result = inspector.judge(frame)
        assert result.decision.verdict is (VerdictKind.PASS if value == 255 else VerdictKind.REJECT)
        seen.append(tuple(id(b) for b in inspector._composites[0][(48, 64)]))
    assert len(set(seen)) == 1 and len(inspector._composites[0]) == 1
    service.engine.close()


def test_a_shifted_part_passes_once_the_reference_is_aligned(tmp_path: Path) -> None:
    """The same good board, 3 px off its golden reference: every edge differs (REJECT) until
    `reference_align` moves the reference onto it (PASS); a real defect still fails."""
    model = difference_detector(tmp_path / "diff.onnx")
    rng = np.random.default_rng(5)
    golden = np.kron(rng.integers(0, 2, (6, 8)).astype(np.uint8) * 255, np.ones((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "golden.png"), golden)
    moved = cv2.warpAffine(
        golden, np.float32([[1, 0, 3], [0, 1, -2]]), (64, 48), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE
    )
    (tmp_path / "parts").mkdir()
    cv2.imwrite(str(tmp_path / "parts" / "a_shifted_good.png"), moved)
    defect = moved.copy()
    defect[8:40, 8:56] = 255 - defect[8:40, 8:56]  # a large flaw
    cv2.imwrite(str(tmp_path / "parts" / "b_shifted_defect.png"), defect)
    camera = {"path": str(tmp_path / "parts"), "loop": False}
    refs = {"line1": "golden.png"}
    # the model's score is the mean difference over its input, letterbox grey included (~0.11)
    decision = {"min_confidence": 0.2, "thresholds_file": None}
    plain = run_verdicts(service_config(model, camera, references=refs, decision=decision), 2, tmp_path)
    assert plain == {"a_shifted_good": VerdictKind.REJECT, "b_shifted_defect": VerdictKind.REJECT}
    text = service_config(model, camera, references=refs, decision=decision, reference_align={"max_shift_px": 4})
    aligned = run_verdicts(text, 2, tmp_path)
    assert aligned == {"a_shifted_good": VerdictKind.PASS, "b_shifted_defect": VerdictKind.REJECT}
