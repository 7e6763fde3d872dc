"""evaluate() and the eval/calibrate commands on six real DeepPCB validation images with the shipped model.

The shipped model is an early checkpoint that will be replaced, so these tests check structure
and consistency (keys, ranges, files, agreement between views), not accuracy.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cameras import labels
from cameras.base import Frame
from edge.decision import DecisionConfig, compile_rules
from edge.errors import ConfigError, DatasetError
from edge.inspector import DecodeSettings, Inspector
from edge.training.calibrate import calibrate, load_thresholds, save_thresholds, sidecar_path
from edge.training.cli import add_commands
from edge.training.dataset import convert
from edge.training.evaluate import EvalResult, evaluate, read_labels, resolve_split
from edge.training.partmetrics import PartMetrics
from edge.training.runner import open_engine
from edge.verdict import VerdictKind

REAL_DEEPPCB = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "deeppcb"
VAL_GROUP = "group44000"
PAIRS = 3  # 3 defective boards + their 3 templates = 6 images


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLO dataset of 6 real DeepPCB validation images (3 defective, 3 good templates)."""
    if not (REAL_DEEPPCB / "list.txt").is_file():
        pytest.skip(f"DeepPCB not found at {REAL_DEEPPCB}")
    root = tmp_path_factory.mktemp("tiny")
    src = root / "src"
    lines = [ln for ln in (REAL_DEEPPCB / "list.txt").read_text().splitlines() if ln.startswith(VAL_GROUP)]
    for line in lines[:PAIRS]:
        image_rel, ann_rel = line.split()
        base = Path(image_rel)
        for suffix in ("_test.jpg", "_temp.jpg"):
            rel = base.with_name(base.stem + suffix)
            (src / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REAL_DEEPPCB / "images" / rel, src / "images" / rel)
        (src / "annotations" / ann_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL_DEEPPCB / "annotations" / ann_rel, src / "annotations" / ann_rel)
    (src / "list.txt").write_text("\n".join(lines[:PAIRS]) + "\n")
    report = convert(src, root / "yolo", val_groups=[VAL_GROUP])
    assert report.images["val"] == 2 * PAIRS
    return report.data_yaml


@pytest.fixture(scope="module")
def model_copy(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model copied to a temp folder, so sidecars can be written beside it."""
    dst = tmp_path_factory.mktemp("model") / model_path.name
    shutil.copyfile(model_path, dst)
    return dst


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def result(model_copy: Path, tiny_data: Path, eval_dir: Path) -> EvalResult:
    return evaluate(model_copy, tiny_data, out_dir=eval_dir)


def in_unit(x: float | None) -> bool:
    return x is not None and 0.0 <= x <= 1.0


def test_summary_structure_and_ranges(result: EvalResult, eval_dir: Path) -> None:
    s = json.loads((eval_dir / "summary.json").read_text())
    assert {
        "model",
        "model_id",
        "data",
        "split",
        "images",
        "box",
        "part",
        "confusion_matrix",
        "speed_ms_per_image",
        "plots",
    } <= set(s)
    assert s["images"] == 6 and s["split"] == "val" and len(s["model_id"]) == 16
    box = s["box"]
    assert in_unit(box["mAP50"]) and in_unit(box["mAP50-95"]) and box["mAP50-95"] <= box["mAP50"] + 1e-9
    assert in_unit(box["mAP33"]) and box["mAP33"] >= box["mAP50"] - 1e-9  # a looser IoU only adds matches
    assert in_unit(box["precision"]) and in_unit(box["recall"])
    assert set(box["classes"]) == set(result.names)
    for c in box["classes"].values():
        if c["instances"]:
            assert all(in_unit(c[k]) for k in ("ap50", "ap50_95", "precision", "recall"))
        else:
            assert c["ap50"] is None
    assert sum(c["instances"] for c in box["classes"].values()) == s["instances"] > 0
    part = s["part"]
    assert in_unit(part["part_recall"]) and in_unit(part["false_reject_rate"])
    assert (part["parts"], part["defective_parts"], part["good_parts"]) == (6, 3, 3)
    assert part["tp"] + part["fn"] == 3 and part["fp"] + part["tn"] == 3
    assert part["thresholds"] == {n: 0.25 for n in result.names}
    assert part["thresholds_source"] == "single threshold 0.25"
    cm = s["confusion_matrix"]
    assert cm["labels"] == [*result.names, "background"]
    # every ground-truth box lands in exactly one cell of its column
    assert np.asarray(cm["matrix"])[:, :-1].sum() == s["instances"]
    assert s["speed_ms_per_image"]["total"] > 0


def test_plots_exist_and_decode(result: EvalResult) -> None:
    pytest.importorskip("matplotlib")  # the PNGs need the dev/train extra
    names = {p.name for p in result.plots}
    assert names == {"pr_curve.png", "confusion_matrix.png", "part_curve.png"}
    for p in result.plots:
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def judged_by_the_service(model: Path, images: list[Path], thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image through the service's own path (engine, `Inspector`: preprocessing, decoding
    at conf 0.001, the decision rules at these per-class thresholds): whether it was rejected, and
    the top decoded score of each class (0 where none). Nothing of eval's code is used."""
    engine, info = open_engine(model)
    try:
        classes = {n: {"min_confidence": float(t)} for n, t in zip(info.names, thresholds, strict=True)}
        rules = compile_rules(DecisionConfig.model_validate({"classes": classes}), info.names)
        inspector = Inspector(engine, info, rules, DecodeSettings(confidence=0.001, iou=0.7, max_detections=300))
        rejected, top = np.zeros(len(images), bool), np.zeros((len(images), len(info.names)), np.float32)
        for i, image in enumerate(images):
            frame = Frame(cv2.imread(str(image), cv2.IMREAD_COLOR), i, image.stem, "eval", 0)
            decision = inspector.judge(frame).decision
            rejected[i] = decision.verdict is VerdictKind.REJECT
            for d in decision.detections:
                top[i, d.cls] = max(top[i, d.cls], d.confidence)
        return rejected, top
    finally:
        engine.close()


def labelled_defective(data_yaml: Path, images: list[Path]) -> np.ndarray:
    """Ground truth read straight from the label files: a non-empty label is a defective part."""
    labels_dir = data_yaml.parent / "labels" / "val"
    texts = [
        (labels_dir / f"{p.stem}.txt").read_text() if (labels_dir / f"{p.stem}.txt").is_file() else "" for p in images
    ]
    return np.array([bool(t.strip()) for t in texts])


def assert_parts_match(part: PartMetrics, defective: np.ndarray, rejected: np.ndarray) -> None:
    counts = {
        "tp": int((defective & rejected).sum()),
        "fn": int((defective & ~rejected).sum()),
        "fp": int((~defective & rejected).sum()),
        "tn": int((~defective & ~rejected).sum()),
    }
    assert {k: getattr(part, k) for k in counts} == counts


def test_part_metrics_are_what_the_service_decides(result: EvalResult, model_copy: Path, tiny_data: Path) -> None:
    """Eval's part counts and score matrix against the service judging the same images at the
    same thresholds, and the truth read from the label files."""
    assert result.maxconf.shape == (6, len(result.names))
    defective = labelled_defective(tiny_data, result.images)
    assert defective.tolist() == result.defective.tolist() and defective.sum() == 3
    rejected, top = judged_by_the_service(model_copy, result.images, result.thresholds)
    assert_parts_match(result.part, defective, rejected)
    # a class's top score survives NMS: eval's max-confidence matrix is the top decoded score
    seen = top > 0
    np.testing.assert_allclose(result.maxconf[seen], top[seen], atol=1e-5)
    assert (result.maxconf[~seen] < 0.001 + 1e-6).all()


def test_sidecar_is_picked_up_and_checked(model_copy: Path, tiny_data: Path, result: EvalResult) -> None:
    side = sidecar_path(model_copy)
    cal = calibrate(result.maxconf, result.defective, target_recall=0.5, floor=0.001)
    save_thresholds(side, model_id=result.model_id, names=result.names, result=cal, data="tiny")
    try:
        r = evaluate(model_copy, tiny_data)
        assert r.thresholds_source == str(side)
        np.testing.assert_allclose(r.thresholds, cal.thresholds, atol=1e-6)
        rejected, _ = judged_by_the_service(model_copy, r.images, r.thresholds)  # the service, per class
        assert_parts_match(r.part, labelled_defective(tiny_data, r.images), rejected)
        # a sidecar for another model: ignored under "auto", refused when named explicitly
        other = side.with_name("other.thresholds.yaml")
        save_thresholds(other, model_id="0" * 16, names=result.names, result=cal, data="tiny")
        shutil.copyfile(other, side)
        assert evaluate(model_copy, tiny_data).thresholds_source == "single threshold 0.25"
        with pytest.raises(ConfigError, match="recalibrate"):
            evaluate(model_copy, tiny_data, thresholds=other)
        assert evaluate(model_copy, tiny_data, thresholds=0.5).thresholds.tolist() == [0.5] * 6
    finally:
        side.unlink(missing_ok=True)


def test_resolve_split_and_labels(tiny_data: Path, tmp_path: Path) -> None:
    by_yaml = resolve_split(tiny_data, "val")
    by_folder = resolve_split(tiny_data.parent, "val")
    assert by_yaml.images == by_folder.images and by_yaml.labels_dir.name == "val"
    assert by_yaml.names is not None and by_yaml.names[0] == "open"
    with pytest.raises(DatasetError, match="no 'test' split"):
        resolve_split(tiny_data, "test")
    with pytest.raises(DatasetError):
        resolve_split(tmp_path, "val")
    lbl = tmp_path / "x.txt"
    lbl.write_text("2 0.5 0.5 0.25 0.5\n")
    boxes, cls = read_labels(lbl, 640, 320, 6)
    np.testing.assert_allclose(boxes, [[240, 80, 400, 240]])
    assert cls.tolist() == [2]
    assert read_labels(tmp_path / "missing.txt", 10, 10, 6)[0].shape == (0, 4)
    lbl.write_text("9 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match="x.txt:1: class 9 out of range"):
        read_labels(lbl, 10, 10, 6)


def test_eval_reads_labels_as_replay_does(tmp_path: Path) -> None:
    """One YOLO parser: a segmentation polygon is its bounding box (not its first four numbers
    read as cx cy w h) and a `#` comment is skipped, in eval exactly as in the replay camera."""
    label = tmp_path / "p.txt"
    label.write_text("# defects of board 7\n1 0.1 0.2 0.5 0.2 0.3 0.6  # a polygon\n\n0 0.5 0.5 0.2 0.2\n")
    boxes, cls = read_labels(label, 100, 200, 6)
    assert cls.tolist() == [1, 0]
    np.testing.assert_allclose(boxes, [[10, 40, 50, 120], [40, 80, 60, 120]], atol=1e-4)
    replay = labels.yolo_to_pixels(labels.parse_yolo(label.read_text()), 100, 200)
    np.testing.assert_allclose(boxes, np.array([b[1:] for b in replay], np.float32))


def test_cli_eval_and_calibrate(
    model_copy: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    summary = tmp_path / "s.json"
    args = parser.parse_args(
        [
            "eval",
            "--model",
            str(model_copy),
            "--data",
            str(tiny_data),
            "--summary-json",
            str(summary),
            "--thresholds",
            "none",
            "--conf",
            "0.3",
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 6 and out["part"]["thresholds_source"] == "single threshold 0.3"
    assert json.loads(summary.read_text())["model_id"] == out["model_id"]

    side = tmp_path / "cal.thresholds.yaml"
    args = parser.parse_args(
        [
            "calibrate",
            "--model",
            str(model_copy),
            "--data",
            str(tiny_data),
            "--target-recall",
            "0.6",
            "--floor",
            "0.001",
            "--out",
            str(side),
        ]
    )
    code = args.func(args)
    out = json.loads(capsys.readouterr().out)
    assert code == (0 if out["reachable"] else 1)
    t = load_thresholds(side, model_copy)
    assert t.target_part_recall == 0.6 and set(t.thresholds) == set(out["thresholds"])

    # out of sample, grouped by board (the id's last digit): each group is one test/template pair
    args = parser.parse_args(
        [
            "calibrate",
            *("--model", str(model_copy), "--data", str(tiny_data), "--out", str(side)),
            *("--target-recall", "0.6", "--floor", "0.001", "--cross-fit", "--group-pattern", r"_\d+(\d)_"),
        ]
    )
    code = args.func(args)
    out = json.loads(capsys.readouterr().out)
    folds = out["cross_fitted"]["folds"]
    assert len(folds) == 3 and all(f["parts"] == 2 and f["defective_parts"] == 1 for f in folds)
    pooled = out["cross_fitted"]["pooled"]
    assert pooled["tp"] == sum(f["tp"] for f in folds) and pooled["fp"] == sum(f["fp"] for f in folds)
    assert yaml.safe_load(side.read_text())["cross_fitted"]["groups"] == [f["held_out"] for f in folds]
    # the default pattern finds one group here (all of group 44000): a clear error, exit 2
    args = parser.parse_args(["calibrate", "--model", str(model_copy), "--data", str(tiny_data), "--cross-fit"])
    assert args.func(args) == 2
    assert "at least 2 groups" in capsys.readouterr().err

    args = parser.parse_args(["eval", "--model", str(model_copy), "--data", str(tmp_path / "nope")])
    assert args.func(args) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_input_kind_must_match_the_model() -> None:
    from edge.reference import check_input_kind, compose, is_reference_composite

    rng = np.random.default_rng(3)
    part = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    ref = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    composite = compose(part, ref)
    grey = cv2.merge([part, part, part])
    assert is_reference_composite(composite) and not is_reference_composite(grey)
    assert not is_reference_composite(part)
    check_input_kind(composite, True, Path("c.png"))
    check_input_kind(grey, False, Path("g.png"))
    with pytest.raises(DatasetError, match="g.png: the model compares parts with golden references"):
        check_input_kind(grey, True, Path("g.png"))
    with pytest.raises(DatasetError, match="c.png: a golden-reference composite, but the model takes plain"):
        check_input_kind(composite, False, Path("c.png"))
