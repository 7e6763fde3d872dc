"""Batch > 1 (several cameras, one inference): every frame still gets its own, right verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edge.app import build_service
from edge.config import parse_config
from edge.verdict import Verdict, VerdictKind


def brightness_detector(path: Path, size: int = 32) -> Path:
    """A real ONNX model, dynamic batch: one box whose 'defect' score is the image's mean
    brightness, so a white frame is a defect and a black one is not, item by item."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 5, 1])
    box = np.array([[[8.0], [8.0], [6.0], [6.0]]], np.float32)  # cx, cy, w, h in input pixels
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Squeeze", ["mean4", "sq_axes"], ["mean"]),  # (B,)
        helper.make_node("Reshape", ["mean", "score_shape"], ["score"]),  # (B, 1, 1)
        helper.make_node("Mul", ["score", "zeros"], ["zero_box"]),  # (B, 4, 1) of zeros
        helper.make_node("Add", ["zero_box", "box"], ["boxes"]),
        helper.make_node("Concat", ["boxes", "score"], ["output0"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([2, 3], np.int64), "sq_axes"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "score_shape"),
        numpy_helper.from_array(np.zeros((1, 4, 1), np.float32), "zeros"),
        numpy_helper.from_array(box, "box"),
    ]
    graph = helper.make_graph(nodes, "brightness", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    meta = {"task": "detect", "stride": "8", "imgsz": str([size, size]), "names": "{0: 'defect'}", "batch": "2"}
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, str(path))
    return path


def test_two_cameras_batched_each_frame_gets_its_own_verdict(tmp_path: Path) -> None:
    model = brightness_detector(tmp_path / "bright.onnx")
    for name, value in (("white", 255), ("black", 0)):
        (tmp_path / name).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), np.full((48, 64), value, np.uint8))
    # max_in_flight: two cameras never hold more than the ring's 8 slots (no overflow under load)
    cams: list[dict[str, Any]] = [
        {"type": "replay", "name": name, "path": str(tmp_path / name), "rate_ppm": 1200, "max_in_flight": 4}
        for name in ("white", "black")
    ]
    text = yaml.safe_dump(
        {
            "cameras": cams,
            "engine": {"type": "onnxruntime", "model": str(model), "batch": 2, "warmup": 1},
            "decision": {"min_confidence": 0.5, "thresholds_file": None},
            # generous: a loaded CI machine must not turn the batching check into deadline misses
            "pipeline": {"budget_ms": 10_000, "ring_slots": 8, "batch_wait_ms": 20},
            "frame_check": {"uniform": False},  # the test's frames are uniform on purpose
            "sinks": [],
            "metrics": {"port": 0},
        }
    )
    service = build_service(parse_config(text, "<batch>"), max_frames=40)
    assert service.pipeline.inspector.batch == 2
    infer_calls = [0]
    real_infer = service.engine.infer

    def counting_infer() -> np.ndarray:
        infer_calls[0] += 1
        return real_infer()

    service.pipeline.inspector.engine.infer = counting_infer  # type: ignore[method-assign]
    verdicts: list[Verdict] = []
    service.pipeline.subscribe(lambda v, _frame: verdicts.append(v), "test")
    service.start(serve_metrics=False)
    service.pipeline.wait(60)
    summary = service.stop()

    assert summary["frames_in"] == 40 == len(verdicts) == len({(v.camera, v.frame_id) for v in verdicts})
    assert summary["verdicts"]["failsafe"] == 0
    for v in verdicts:
        expected = VerdictKind.REJECT if v.camera == "white" else VerdictKind.PASS
        assert v.verdict is expected, (v.camera, v.verdict)
    assert infer_calls[0] < 40, "frames of the two cameras were never batched together"
