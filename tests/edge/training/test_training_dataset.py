"""DeepPCB / VOC -> YOLO conversion: counts, coordinates, the by-group split, good parts, thinning."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.errors import DatasetError
from edge.training.cli import add_commands
from edge.training.dataset import (
    DEEPPCB_CLASSES,
    convert,
    dataset_input_kind,
    image_groups,
    load_deeppcb,
    parse_deeppcb_annotation,
    split_by_group,
    thin_good_parts,
    yolo_label_lines,
)

REAL_DEEPPCB = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "deeppcb"

# group -> image id -> annotation lines
TOY: dict[str, dict[str, list[str]]] = {
    "group10000": {"10000000": ["409 394 435 422 3", "10 20 50 60 1"], "10000001": ["0 0 32 32 6"]},
    "group20000": {"20000000": ["100 100 140 150 2"], "20000001": ["600 600 640 640 4", "1 1 5 5 5"]},
    "group30000": {"30000000": ["300 300 330 310 1"], "30000001": ["200 210 220 230 3"]},
}


def make_deeppcb(root: Path, toy: dict[str, dict[str, list[str]]] = TOY) -> Path:
    """A DeepPCB-shaped folder: list.txt, images/<group>/<id>/<n>_{test,temp}.jpg, annotations."""
    img = np.zeros((640, 640), np.uint8)
    lines = []
    for group, items in toy.items():
        gid = group.removeprefix("group")
        (root / "images" / group / gid).mkdir(parents=True)
        (root / "annotations" / group / f"{gid}_not").mkdir(parents=True)
        for n, ann in items.items():
            cv2.imwrite(str(root / "images" / group / gid / f"{n}_test.jpg"), img)
            cv2.imwrite(str(root / "images" / group / gid / f"{n}_temp.jpg"), img)
            (root / "annotations" / group / f"{gid}_not" / f"{n}.txt").write_text("\n".join(ann) + "\n")
            lines.append(f"{group}/{gid}/{n}.jpg {group}/{gid}_not/{n}.txt")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def label_files(out: Path, split: str) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((out / "labels" / split).glob("*.txt"))}


def test_deeppcb_counts_and_split_by_group(tmp_path: Path) -> None:
    src = make_deeppcb(tmp_path / "src")
    report = convert(src, tmp_path / "out", val_groups=["group20000"])
    assert report.images == {"train": 8, "val": 4}
    assert report.boxes == {"train": 5, "val": 3}
    assert report.good_parts == {"train": 4, "val": 2}
    assert report.groups == {"train": ["group10000", "group30000"], "val": ["group20000"]}
    out = tmp_path / "out"
    for split in ("train", "val"):
        images = sorted(p.stem for p in (out / "images" / split).iterdir())
        assert images == sorted(label_files(out, split))
    train_groups = {s.split("_")[0] for s in label_files(out, "train")}
    val_groups = {s.split("_")[0] for s in label_files(out, "val")}
    assert train_groups.isdisjoint(val_groups)
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert doc["train"] == "images/train" and doc["val"] == "images/val"
    assert doc["names"] == dict(enumerate(DEEPPCB_CLASSES))


def test_known_box_coordinates(tmp_path: Path) -> None:
    convert(make_deeppcb(tmp_path / "src"), tmp_path / "out", val_groups=["group20000"])
    lines = label_files(tmp_path / "out", "train")["group10000_10000000_test"].splitlines()
    assert lines[0] == "2 0.659375 0.637500 0.040625 0.043750"  # 409 394 435 422 type 3 (mousebite)
    assert lines[1].startswith("0 ")


def test_templates_are_empty_label_good_parts(tmp_path: Path) -> None:
    convert(make_deeppcb(tmp_path / "src"), tmp_path / "out", val_groups=["group20000"])
    for split in ("train", "val"):
        for stem, text in label_files(tmp_path / "out", split).items():
            assert (text == "") == stem.endswith("_temp"), stem


def test_no_templates(tmp_path: Path) -> None:
    report = convert(
        make_deeppcb(tmp_path / "src"), tmp_path / "out", val_groups=["group20000"], include_templates=False
    )
    assert report.good_parts == {"train": 0, "val": 0}
    assert report.images == {"train": 4, "val": 2}


@pytest.mark.parametrize(("fraction", "kept"), [(1.0, 4), (0.5, 2), (0.25, 1), (0.0, 0)])
def test_train_good_fraction_thins_train_only(tmp_path: Path, fraction: float, kept: int) -> None:
    report = convert(
        make_deeppcb(tmp_path / "src"), tmp_path / "out", val_groups=["group20000"], train_good_fraction=fraction
    )
    assert report.good_parts == {"train": kept, "val": 2}
    assert report.boxes["train"] == 5  # every defective sample stays


def test_thin_good_parts_rejects_bad_fraction() -> None:
    with pytest.raises(DatasetError):
        thin_good_parts([], 1.5)


def test_deeppcb_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="list.txt"):
        load_deeppcb(tmp_path)
    src = make_deeppcb(tmp_path / "src")
    with pytest.raises(DatasetError, match="not in the data"):
        convert(src, tmp_path / "out", val_groups=["group99999"])
    with pytest.raises(DatasetError, match="unknown annotation format"):
        convert(src, tmp_path / "out", fmt="coco")
    bad = tmp_path / "bad.txt"
    for text, match in [
        ("1 2 3 4\n", "expected"),
        ("1 2 30 40 9\n", "outside"),
        ("5 5 5 9 1\n", "empty box"),
        ("a b c d e\n", "non-numeric"),
    ]:
        bad.write_text(text)
        with pytest.raises(DatasetError, match=match):
            parse_deeppcb_annotation(bad)


def test_deeppcb_annotation_is_parsed_as_replay_parses_it(tmp_path: Path) -> None:
    """One DeepPCB parser (cameras.labels.parse_deeppcb) for conversion and the replay camera."""
    from cameras.labels import DEEPPCB_CLASS_NAMES, parse_deeppcb

    text = "409,394,435,422,3\n\n10 20 50 60 1\n"
    (tmp_path / "a.txt").write_text(text)
    boxes = parse_deeppcb_annotation(tmp_path / "a.txt")
    assert [(b.cls, b.x1, b.y1, b.x2, b.y2) for b in boxes] == list(parse_deeppcb(text))
    assert [b.cls for b in boxes] == [2, 0]
    assert DEEPPCB_CLASSES is DEEPPCB_CLASS_NAMES
    with pytest.raises(DatasetError, match="cannot read"):
        parse_deeppcb_annotation(tmp_path / "missing.txt")


def _voc_xml(filename: str, objects: list[tuple[str, int, int, int, int]], size: tuple[int, int]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height></size>{objs}</annotation>"
    )


def make_voc(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    img = np.zeros((100, 200, 3), np.uint8)
    items = {
        "boardA_1": [("scratch", 11, 21, 50, 60)],
        "boardA_2": [],
        "boardB_1": [("dent", 1, 1, 200, 100), ("scratch", 101, 51, 120, 70)],
        "boardB_2": [],
    }
    for stem, objs in items.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), img)
        size = (0, 0) if stem == "boardB_2" else (200, 100)  # size 0: read from the image
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", objs, size))
    return root


def test_voc_conversion(tmp_path: Path) -> None:
    src = make_voc(tmp_path / "voc")
    report = convert(src, tmp_path / "out", fmt="voc", class_names=["scratch", "dent"], val_groups=["boardB"])
    assert report.images == {"train": 2, "val": 2}
    assert report.boxes == {"train": 1, "val": 2}
    assert report.good_parts == {"train": 1, "val": 1}
    train = label_files(tmp_path / "out", "train")
    # VOC is 1-based inclusive: xmin 11 -> x1 10; (10+50)/2/200 = 0.15, (20+60)/2/100 = 0.4
    assert train["boardA_boardA_1"].splitlines() == ["0 0.150000 0.400000 0.200000 0.400000"]
    val = label_files(tmp_path / "out", "val")
    assert val["boardB_boardB_1"].splitlines()[0] == "1 0.500000 0.500000 1.000000 1.000000"
    assert val["boardB_boardB_2"] == ""


def test_voc_errors(tmp_path: Path) -> None:
    src = make_voc(tmp_path / "voc")
    with pytest.raises(DatasetError, match="class names"):
        convert(src, tmp_path / "out", fmt="voc")
    with pytest.raises(DatasetError, match="not one of"):
        convert(src, tmp_path / "out", fmt="voc", class_names=["scratch"])
    with pytest.raises(DatasetError, match="not a Pascal VOC"):
        convert(tmp_path, tmp_path / "out", fmt="voc", class_names=["scratch"])


def test_cli_dataset_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    src = make_deeppcb(tmp_path / "src")
    args = parser.parse_args(
        [
            "dataset",
            "convert",
            str(src),
            str(tmp_path / "out"),
            "--val-groups",
            "group30000",
            "--train-good-fraction",
            "0.5",
        ]
    )
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == {"train": 6, "val": 4} and doc["good_parts"]["train"] == 2
    args = parser.parse_args(["dataset", "convert", str(tmp_path / "nope"), str(tmp_path / "out2")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_real_deeppcb_counts_and_groups() -> None:
    if not (REAL_DEEPPCB / "list.txt").is_file():
        pytest.skip(f"DeepPCB not found at {REAL_DEEPPCB}")
    samples = load_deeppcb(REAL_DEEPPCB)
    defective = [s for s in samples if s.defective]
    good = [s for s in samples if not s.defective]
    assert len(defective) == 1000 and len(good) == 1000
    assert all(s.stem.endswith("_temp") for s in good)
    assert sum(len(s.boxes) for s in samples) == 6873
    splits = split_by_group(samples, ("group44000", "group50600", "group77000"))
    train_groups = {s.group for s in splits["train"]}
    val_groups = {s.group for s in splits["val"]}
    assert train_groups.isdisjoint(val_groups)
    assert len(splits["train"]) + len(splits["val"]) == 2000
    first = next(s for s in samples if s.stem == "20085000_test")
    assert yolo_label_lines(first)[0] == "2 0.659375 0.637500 0.040625 0.043750"


def test_image_groups_from_file_names() -> None:
    images = [Path("v/group44000_44000062_test.jpg"), Path("v/group77000_77000001_temp.jpg"), Path("lotB_17.png")]
    assert image_groups(images) == ["group44000", "group77000", "lotB"]  # what `convert` names
    assert image_groups(images[:2], r"_(\d{5})\d+_") == ["44000", "77000"]
    with pytest.raises(DatasetError, match="does not name a group"):
        image_groups([Path("nounderscore.jpg")])
    with pytest.raises(DatasetError, match="needs a capture group"):
        image_groups(images, "group")
    with pytest.raises(DatasetError, match="not a valid regex"):
        image_groups(images, "(")


def test_reference_pairs_are_composites_and_repaired_good_parts(tmp_path: Path) -> None:
    """--reference: (test, template, |difference|) composites; a good part is the test image with
    its defect boxes pasted over from the template, its noise elsewhere kept."""
    src = make_deeppcb(tmp_path / "src", {"group10000": {"10000000": ["100 100 140 150 2"]}})
    folder = src / "images" / "group10000" / "10000"
    template = np.zeros((640, 640), np.uint8)
    template[:, 300:320] = 255  # a trace
    test = template.copy()
    test[110:140, 105:130] = 255  # the defect, inside its box
    test[500, 500] = 255  # capture noise outside any box
    cv2.imwrite(str(folder / "10000000_temp.png"), template)  # lossless stand-ins for the JPEGs
    cv2.imwrite(str(folder / "10000000_test.png"), test)
    (folder / "10000000_temp.png").replace(folder / "10000000_temp.jpg")
    (folder / "10000000_test.png").replace(folder / "10000000_test.jpg")
    report = convert(src, tmp_path / "out", val_groups=["group10000"], reference=True)
    assert report.images == {"train": 0, "val": 2} and report.good_parts == {"train": 0, "val": 1}
    val = tmp_path / "out" / "images" / "val"
    assert sorted(p.name for p in val.iterdir()) == ["group10000_10000000_good.png", "group10000_10000000_test.png"]
    defective = cv2.imread(str(val / "group10000_10000000_test.png"), cv2.IMREAD_UNCHANGED)
    good = cv2.imread(str(val / "group10000_10000000_good.png"), cv2.IMREAD_UNCHANGED)
    assert defective.shape == good.shape == (640, 640, 3)
    np.testing.assert_array_equal(defective[..., 0], test)
    np.testing.assert_array_equal(defective[..., 1], template)
    np.testing.assert_array_equal(defective[..., 2], np.where(test != template, 255, 0))
    repaired = test.copy()
    repaired[100:150, 100:140] = template[100:150, 100:140]
    np.testing.assert_array_equal(good[..., 0], repaired)
    assert good[500, 500, 2] == 255 and not good[100:150, 100:140, 2].any()
    labels = label_files(tmp_path / "out", "val")
    assert labels["group10000_10000000_good"] == "" and labels["group10000_10000000_test"].startswith("1 ")
    assert dataset_input_kind(report.data_yaml) == "reference-composite"  # `train --export` marks the model
    assert dataset_input_kind(convert(src, tmp_path / "plain", val_groups=["group10000"]).data_yaml) is None
    with pytest.raises(DatasetError, match="DeepPCB"):
        convert(make_voc(tmp_path / "voc"), tmp_path / "o2", fmt="voc", class_names=["a"], reference=True)


def test_reference_pairs_can_be_aligned_first(tmp_path: Path) -> None:
    src = make_deeppcb(tmp_path / "src", {"group10000": {"10000000": ["100 100 140 150 2"]}})
    folder = src / "images" / "group10000" / "10000"
    blocks = np.random.default_rng(2).integers(0, 2, (80, 80)).astype(np.uint8) * 255
    template = np.kron(blocks, np.ones((8, 8), np.uint8))
    m = np.float32([[1, 0, 2], [0, 1, -1]])  # the board sits 2 px right, 1 px up of its template
    test = cv2.warpAffine(template, m, (640, 640), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    for name, image in (("10000000_temp", template), ("10000000_test", test)):
        cv2.imwrite(str(folder / f"{name}.png"), image)
        (folder / f"{name}.png").replace(folder / f"{name}.jpg")
    val = tmp_path / "a" / "images" / "val"
    report = convert(src, tmp_path / "a", val_groups=["group10000"], reference=True, align_px=4)
    assert yaml.safe_load(report.data_yaml.read_text())["reference_align_px"] == 4
    assert not cv2.imread(str(val / "group10000_10000000_test.png"))[..., 2].any()  # aligned: no difference
    raw = tmp_path / "b" / "images" / "val"
    convert(src, tmp_path / "b", val_groups=["group10000"], reference=True)
    assert cv2.imread(str(raw / "group10000_10000000_test.png"))[..., 2].mean() > 20  # every edge differs
    with pytest.raises(DatasetError, match="needs --reference"):
        convert(src, tmp_path / "c", val_groups=["group10000"], align_px=4)
