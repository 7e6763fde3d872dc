"""INT8 quantization with NNCF (edge.quantization.quantize) and `edge-inspect quantize`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.errors import DatasetError, EngineUnavailableError
from edge.quantization.quantize import activation_counts, calibration_images, default_output, yolo_head_ignored_patterns

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "edge" / "demo_data"


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def defective_demo_images() -> list[Path]:
    out = []
    for p in sorted((DEMO / "images").glob("*_test.jpg")):
        label = DEMO / "labels" / f"{p.stem}.txt"
        if label.is_file() and label.read_text().strip():
            out.append(p)
    return out


def test_calibration_images(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / f"{i:02d}.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    picked = calibration_images(tmp_path, 4)
    assert [p.name for p in picked] == ["00.jpg", "03.jpg", "06.jpg", "09.jpg"]  # spread, recursive
    assert len(calibration_images(tmp_path, 50)) == 10
    with pytest.raises(DatasetError, match="no images"):
        calibration_images(_empty(tmp_path), 3)
    with pytest.raises(DatasetError, match="does not exist"):
        calibration_images(tmp_path / "missing", 3)
    with pytest.raises(DatasetError, match="at least one"):
        calibration_images(tmp_path, 0)


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir(exist_ok=True)
    return d


def test_activation_counts(model_path: Path) -> None:
    """SiLU as Sigmoid * x (either operand order) or Swish, and ReLU; a Sigmoid alone is not one."""
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops

    x = ops.parameter([1, 4], np.float32, name="x")
    silu_a = ops.multiply(x, ops.sigmoid(x))
    silu_b = ops.multiply(ops.sigmoid(silu_a), silu_a)
    other = ops.multiply(x, ops.sigmoid(silu_b))  # sigmoid of another tensor: not a SiLU
    out = ops.add(ops.relu(ops.swish(other)), ops.sigmoid(x))
    model = ov.Model([out.output(0)], [x], "acts")
    assert activation_counts(model) == {"silu": 3, "relu": 1}
    assert activation_counts(ov.convert_model(str(model_path))) == {"silu": 77, "relu": 0}


def test_head_patterns_leave_branch_convs_quantized() -> None:
    import re

    names = [
        "/model.22/cv1/conv/Conv",
        "/model.23/cv2.0/cv2.0.0/conv/Conv",
        "/model.23/cv3.2/cv3.2.2/Conv/WithoutBiases",
        "/model.23/dfl/conv/Conv",
        "/model.23/dfl/Softmax",
        "/model.23/Sub",
        "/model.23/Mul_2",
        "/model.23/Concat_3",
        "/model.23/Sigmoid",
    ]
    (pattern,) = yolo_head_ignored_patterns(names)
    ignored = {n for n in names if re.match(pattern, n)}
    assert ignored == set(names[3:])
    assert yolo_head_ignored_patterns(["/backbone/Conv", "/head/Sigmoid"]) == []
    # With output_convs, the last 1x1 conv of each branch (box distribution, class logits) too.
    patterns = yolo_head_ignored_patterns(names, output_convs=True)
    ignored = {n for n in names if any(re.match(p, n) for p in patterns)}
    assert ignored == {names[2], *names[3:]}
    assert default_output(Path("m/a.onnx")) == Path("m/a-int8.xml")


def test_without_nncf(monkeypatch: pytest.MonkeyPatch, model_path: Path, tmp_path: Path) -> None:
    from edge.quantization.quantize import quantize_onnx

    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf -> ImportError
    with pytest.raises(EngineUnavailableError, match="quantize"):
        quantize_onnx(model_path, DEMO / "images", out=tmp_path / "x.xml", calib_count=2)


def test_cli_without_nncf(monkeypatch: pytest.MonkeyPatch, model_path: Path, tmp_path: Path) -> None:
    from edge.cli import main

    monkeypatch.setitem(sys.modules, "nncf", None)
    rc = main(
        ["quantize", "--model", str(model_path), "--calib", str(DEMO / "images"), "--out", str(tmp_path / "x.xml")]
    )
    assert rc == 2


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> dict[str, Any]:
    """`edge-inspect quantize` with 20 calibration images and a 10-image labelled split."""
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    from edge.cli import main

    tmp = tmp_path_factory.mktemp("quantize")
    data = tmp / "data"
    (data / "images" / "val").mkdir(parents=True)
    (data / "labels" / "val").mkdir(parents=True)
    for p in sorted((DEMO / "images").glob("*.jpg"))[::3][:10]:  # good and defective boards of 3 groups
        shutil.copy(p, data / "images" / "val" / p.name)
        label = DEMO / "labels" / f"{p.stem}.txt"
        if label.is_file():
            shutil.copy(label, data / "labels" / "val" / label.name)
    out = tmp / "int8" / "pcb-int8.xml"
    summary = tmp / "summary.json"
    rc = main(
        [
            "quantize",
            "--model",
            str(model_path),
            "--calib",
            str(DEMO / "images"),
            "--calib-count",
            "20",
            "--data",
            str(data),
            "--out",
            str(out),
            "--summary-json",
            str(summary),
            "--threads",
            "2",
        ]
    )
    return {"rc": rc, "xml": out, "data": data, "summary": json.loads(summary.read_text())}


def judged_by_the_service(model: Path, data: Path) -> dict[str, int]:
    """The split's images through the service's own path (OpenVINO engine, `Inspector`, the rules
    with `thresholds_file: auto`, i.e. the model's own sidecar), counted against the label files."""
    import cv2

    from cameras.base import Frame
    from edge.decision import DecisionConfig, compile_rules
    from edge.engines.openvino import OpenVinoEngineConfig
    from edge.inspector import DecodeSettings, Inspector
    from edge.thresholds import sidecar_path
    from edge.verdict import VerdictKind

    engine = OpenVinoEngineConfig(model=str(model), num_threads=2, warmup=0).build(Path("."))
    info = engine.load()
    try:
        rules = compile_rules(DecisionConfig(), info.names, model_path=model)
        assert rules.threshold_source == str(sidecar_path(model))
        inspector = Inspector(engine, info, rules, DecodeSettings(confidence=0.25, iou=0.7, max_detections=300))
        counts = {"missed": 0, "false_rejects": 0, "defective_parts": 0, "good_parts": 0}
        for i, image in enumerate(sorted((data / "images" / "val").iterdir())):
            label = data / "labels" / "val" / f"{image.stem}.txt"
            defective = label.is_file() and bool(label.read_text().strip())
            frame = Frame(cv2.imread(str(image), cv2.IMREAD_COLOR), i, image.stem, "quantize", 0)
            rejected = inspector.judge(frame).decision.verdict is VerdictKind.REJECT
            counts["defective_parts" if defective else "good_parts"] += 1
            counts["missed"] += defective and not rejected
            counts["false_rejects"] += rejected and not defective
        return counts
    finally:
        engine.close()


def test_quantize_writes_ir_with_metadata(quantized: dict[str, Any], model_path: Path) -> None:
    import openvino as ov

    from edge.engines.model import model_id_of, read_model_info

    s, xml = quantized["summary"], quantized["xml"]
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert s["calibration"]["images"] == 20 and s["preset"] == "mixed"
    assert s["fake_quantize_ops"] > 0 and s["ignored_patterns"]
    assert s["activations"] == {"silu": 77, "relu": 0}  # and a warning that SiLU is slow in INT8 on a CPU
    assert s["source_model_id"] == model_id_of(model_path)
    assert s["sizes_bytes"]["bin"] < s["sizes_bytes"]["onnx"]  # int8 weights
    names = read_model_info(model_path).names
    assert tuple(s["names"]) == names
    ov_model = ov.Core().read_model(str(xml))
    assert ov_model.get_rt_info(["model_info", "source_model_id"]).astype(str) == s["source_model_id"]
    assert "INT8" in ov_model.get_rt_info(["model_info", "quantization"]).astype(str)
    assert ov_model.get_rt_info(["model_info", "names"]).astype(str) == str(dict(enumerate(names)))


def test_quantize_reports_accuracy_change(quantized: dict[str, Any], model_path: Path) -> None:
    acc = quantized["summary"]["accuracy"]
    for key in ("fp32", "int8"):
        m = acc[key]
        assert m["runtime"] == "openvino (CPU)" and m["parts"]["parts"] == 10
        assert 0 <= m["mAP50"] <= 1 and 0 <= m["part_recall"] <= 1 and 0 <= m["false_reject_rate"] <= 1
    assert acc["int8"]["model_id"] == quantized["summary"]["model_id"] != acc["fp32"]["model_id"]
    assert set(acc["delta"]) == {"mAP50", "mAP50-95", "part_recall", "false_reject_rate"}
    # the FP32 model has a sidecar: the INT8 model gets its own, and the exit code follows that comparison
    own = acc["own_thresholds"]
    assert (quantized["rc"] == 0) == own["part_recall_unchanged"]
    # what each model does in the service with its own sidecar is what the report says it does
    for key, model in (("fp32", model_path), ("int8", quantized["xml"])):
        reported = {k: own["in_sample"][key][k] for k in ("missed", "false_rejects", "defective_parts", "good_parts")}
        assert judged_by_the_service(model, quantized["data"]) == reported, key
    # on these boards INT8 with its own thresholds catches every defective part, as FP32 does: exit 0
    assert own["in_sample"]["int8"]["missed"] == own["in_sample"]["fp32"]["missed"] == 0
    assert quantized["rc"] == 0 and own["part_recall_unchanged"]


def test_quantize_writes_the_int8_models_own_thresholds(quantized: dict[str, Any], model_path: Path) -> None:
    """Calibrated on the INT8 model's scores like the FP32 sidecar was (same target and floor), keyed
    to the IR, where the service looks for it; the cross-fitted comparison covers both models."""
    from edge.thresholds import load_thresholds, sidecar_path
    from edge.training.evaluate import resolve_thresholds

    xml = quantized["xml"]
    own = quantized["summary"]["accuracy"]["own_thresholds"]
    side = sidecar_path(xml)
    assert own["sidecar"] == str(side) and side == xml.with_name("pcb-int8.thresholds.yaml")
    parent = load_thresholds(sidecar_path(model_path), model_path)
    mine = load_thresholds(side, xml)  # refuses a sidecar made for another model file
    assert mine.model_id == quantized["summary"]["model_id"] != parent.model_id
    assert (mine.target_part_recall, mine.floor) == (parent.target_part_recall, parent.floor)
    assert own["target_part_recall"] == parent.target_part_recall and own["floor"] == parent.floor
    assert dict(mine.thresholds) == own["thresholds"] and all(t >= parent.floor for t in own["thresholds"].values())
    assert mine.data["images"] == 10 and mine.data["split"] == "val"
    names = tuple(own["thresholds"])
    vec, source = resolve_thresholds(None, xml, names, 0.25)
    assert source == str(side) and list(vec) == list(own["thresholds"].values())
    from edge.decision import DecisionConfig, compile_rules

    rules = compile_rules(DecisionConfig(), names, model_path=xml)  # the service's `thresholds_file: auto`
    assert rules.threshold_source == str(side)
    np.testing.assert_allclose(rules.min_conf, list(own["thresholds"].values()), rtol=1e-6)
    assert own["groups"] == ["group44000", "group50600", "group77000"]
    for key in ("fp32", "int8"):
        crossed = own["cross_fitted"][key]
        assert crossed["defective_parts"] + crossed["good_parts"] == 10
        assert crossed["defective_parts"] == own["in_sample"][key]["defective_parts"]


def test_int8_ir_runs_in_openvino_engine(quantized: dict[str, Any], model_path: Path) -> None:
    """The INT8 IR loads with class names and finds what the FP32 model finds confidently."""
    import cv2

    from edge.engines.letterbox import Preprocessor
    from edge.engines.model import read_model_info
    from edge.engines.openvino import OpenVinoEngineConfig
    from edge.engines.yolo import Decoder

    images = defective_demo_images()[:10]
    assert images
    results = {}
    for key, path, conf in (("fp32", model_path, 0.25), ("int8", quantized["xml"], 0.1)):
        engine = OpenVinoEngineConfig(model=str(path), num_threads=2, warmup=1).build(Path("."))
        info = engine.load()
        if key == "int8":
            assert info.names == read_model_info(model_path).names
            assert info.model_id == quantized["summary"]["model_id"]
        pre, dec = Preprocessor(engine.input_buffer()[0]), Decoder(info, conf=conf, iou=0.7)
        results[key] = [dec(engine.infer(), pre(cv2.imread(str(p), cv2.IMREAD_UNCHANGED))) for p in images]
        engine.close()
    assert any(len(d) for d in results["int8"]), "the INT8 model finds nothing on any defective image"
    confident = found = 0
    for fp, q in zip(results["fp32"], results["int8"], strict=True):
        for box, score, cls in zip(fp.boxes, fp.scores, fp.classes, strict=True):
            if score < 0.5:
                continue
            confident += 1
            found += any(c == cls and box_iou(box, b) >= 0.5 for b, c in zip(q.boxes, q.classes, strict=True))
    assert confident >= 5, f"the FP32 model is confident of only {confident} defects on {len(images)} defective boards"
    assert found >= 0.7 * confident, f"INT8 found {found} of {confident} confident FP32 detections"


def test_recall_control_needs_data(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    argv = ["quantize", "--model", str(model_path), "--calib", str(DEMO / "images"), "--out", str(tmp_path / "x.xml")]
    assert main([*argv, "--max-recall-drop", "0"]) == 2
    assert "--max-recall-drop needs --data" in capsys.readouterr().err


def test_quantize_with_recall_control(model_path: Path, tmp_path: Path) -> None:
    """The accuracy-controlled path runs end to end (a loose drop limit keeps it short)."""
    pytest.importorskip("nncf")
    from edge.engines.openvino import OpenVinoEngineConfig
    from edge.quantization.quantize import RecallControl, quantize_onnx

    data = tmp_path / "data"
    (data / "images" / "val").mkdir(parents=True)
    (data / "labels" / "val").mkdir(parents=True)
    for p in defective_demo_images()[:8]:
        shutil.copy(p, data / "images" / "val" / p.name)
        shutil.copy(DEMO / "labels" / f"{p.stem}.txt", data / "labels" / "val" / f"{p.stem}.txt")
    control = RecallControl(data=data, split="val", max_drop=1.0)
    result = quantize_onnx(model_path, DEMO / "images", out=tmp_path / "q.xml", calib_count=10, recall_control=control)
    doc = result.summary()["recall_control"]
    assert doc["defective_images"] == 8 and doc["max_drop"] == 1.0
    assert set(doc["thresholds"]) == set(result.names)
    engine = OpenVinoEngineConfig(model=str(result.xml), num_threads=2).build(Path("."))
    assert engine.load().names == result.names
    engine.close()


def test_dynamic_batch_stays_dynamic(tiny_model: Any, tmp_path: Path) -> None:
    """A dynamic-batch ONNX gives a dynamic-batch IR that the engine runs at the configured batch."""
    pytest.importorskip("nncf")
    from edge.engines.openvino import OpenVinoEngineConfig
    from edge.quantization.quantize import quantize_onnx

    onnx_path = tiny_model(batch="batch", imgsz=(64, 64))
    result = quantize_onnx(onnx_path, DEMO / "images", out=tmp_path / "tiny-int8.xml", calib_count=4)
    assert result.ignored_patterns == []  # no Ultralytics head in the stand-in model: all quantized
    engine = OpenVinoEngineConfig(model=str(result.xml), batch=2, warmup=1).build(Path("."))
    info = engine.load()
    assert engine.input_buffer().shape == (2, 64, 64, 3) and info.names == ("c0", "c1", "c2")
    engine.close()
