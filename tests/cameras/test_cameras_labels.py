"""Label parsing for replayed images: YOLO txt and DeepPCB (pure functions, small path helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cameras import labels as lbl
from edge.errors import DatasetError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DEEPPCB = SHARED / "datasets" / "deeppcb"


# -- YOLO -------------------------------------------------------------------------------------
def test_parse_yolo_boxes_comments_and_blank_lines() -> None:
    text = "0 0.5 0.5 0.2 0.4\n\n# a comment\n3 0.1 0.2 0.05 0.1  # trailing\n"
    assert lbl.parse_yolo(text) == ((0, 0.5, 0.5, 0.2, 0.4), (3, 0.1, 0.2, 0.05, 0.1))


def test_parse_yolo_empty_is_a_good_part() -> None:
    assert lbl.parse_yolo("") == ()
    assert lbl.parse_yolo("\n  \n") == ()


def test_parse_yolo_polygon_becomes_its_bounding_box() -> None:
    ((cls, cx, cy, w, h),) = lbl.parse_yolo("2 0.1 0.2 0.5 0.2 0.3 0.6")
    assert cls == 2
    assert (cx, cy, w, h) == pytest.approx((0.3, 0.4, 0.4, 0.4))


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.5 0.5 0.2", "expected"),
        ("a 0.5 0.5 0.2 0.2", "not a YOLO label line"),
        ("-1 0.5 0.5 0.2 0.2", "non-negative integer"),
        ("1.5 0.5 0.5 0.2 0.2", "non-negative integer"),
        ("0 0.5 0.5 -0.2 0.2", "negative box size"),
        ("0 nan 0.5 0.2 0.2", "non-finite"),
    ],
)
def test_parse_yolo_rejects_malformed_lines_naming_file_and_line(line: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as err:
        lbl.parse_yolo("0 0.5 0.5 0.1 0.1\n" + line, source="x.txt")
    assert "x.txt:2" in str(err.value)


def test_parse_yolo_class_out_of_range() -> None:
    assert lbl.parse_yolo("5 0.5 0.5 0.1 0.1", num_classes=6)
    with pytest.raises(DatasetError, match="class 6 out of range"):
        lbl.parse_yolo("6 0.5 0.5 0.1 0.1", num_classes=6)


def test_yolo_to_pixels_converts_and_clips() -> None:
    boxes = lbl.yolo_to_pixels([(1, 0.5, 0.5, 0.5, 0.25), (0, 0.95, 0.05, 0.2, 0.2)], 640, 480)
    assert boxes[0] == (1, 160.0, 180.0, 480.0, 300.0)
    cls, x1, y1, x2, y2 = boxes[1]
    assert (cls, x1, y1, x2, y2) == pytest.approx((0, 544.0, 0.0, 640.0, 72.0))


def test_yolo_label_candidates_ultralytics_layout() -> None:
    img = Path("/d/images/train/a/x.jpg")
    cands = lbl.yolo_label_candidates(img)
    assert cands == [Path("/d/labels/train/a/x.txt"), Path("/d/images/train/a/x.txt")]


def test_yolo_label_candidates_next_to_image_without_images_folder() -> None:
    assert lbl.yolo_label_candidates(Path("/d/pics/x.png")) == [Path("/d/pics/x.txt")]


def test_yolo_label_candidates_with_labels_dir() -> None:
    cands = lbl.yolo_label_candidates(Path("/d/pics/sub/x.png"), root=Path("/d/pics"), labels_dir=Path("/l"))
    assert cands == [Path("/l/sub/x.txt"), Path("/l/x.txt")]


# -- DeepPCB ----------------------------------------------------------------------------------
def test_parse_deeppcb_maps_type_1_to_6_onto_class_0_to_5() -> None:
    text = "409 394 435 422 3\n275,383,319,417,1\n8 163 36 191 6"
    assert lbl.parse_deeppcb(text) == (
        (2, 409.0, 394.0, 435.0, 422.0),
        (0, 275.0, 383.0, 319.0, 417.0),
        (5, 8.0, 163.0, 36.0, 191.0),
    )
    assert len(lbl.DEEPPCB_CLASS_NAMES) == 6


@pytest.mark.parametrize(
    "line, message",
    [
        ("1 2 3 4 0", "outside 1..6"),
        ("1 2 3 4 7", "outside 1..6"),
        ("1 2 3 4", "expected"),
        ("9 2 3 4 1", "order"),
        ("5 5 5 9 1", "empty box"),
        ("a b c d e", "non-numeric"),
    ],
)
def test_parse_deeppcb_rejects_bad_lines(line: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as err:
        lbl.parse_deeppcb(line, source="a.txt")
    assert "a.txt:1" in str(err.value)


def test_deeppcb_role() -> None:
    assert lbl.deeppcb_role(Path("g/1/100_test.jpg")) == "test"
    assert lbl.deeppcb_role(Path("g/1/100_temp.jpg")) == "template"
    assert lbl.deeppcb_role(Path("g/1/100.jpg")) is None


def test_deeppcb_annotation_candidates_both_layouts() -> None:
    img = Path("/r/images/group1/100/100001_test.jpg")
    cands = lbl.deeppcb_annotation_candidates(img, labels_dir=Path("/ann"))
    assert cands == [
        Path("/ann/group1/100_not/100001.txt"),
        Path("/ann/100_not/100001.txt"),
        Path("/r/annotations/group1/100_not/100001.txt"),  # released layout
        Path("/r/images/group1/100_not/100001.txt"),  # original repository layout
    ]
    assert lbl.deeppcb_annotation_candidates(Path("/r/x.jpg")) == []


def _fake_deeppcb(root: Path) -> None:
    (root / "images" / "group1" / "100").mkdir(parents=True)
    (root / "annotations" / "group1" / "100_not").mkdir(parents=True)
    (root / "list.txt").write_text("group1/100/100001.jpg group1/100_not/100001.txt\n")


def test_parse_deeppcb_list_and_root_detection(tmp_path: Path) -> None:
    _fake_deeppcb(tmp_path)
    assert lbl.is_deeppcb_root(tmp_path)
    assert not lbl.is_deeppcb_root(tmp_path / "images")
    (pair,) = lbl.parse_deeppcb_list((tmp_path / "list.txt").read_text(), tmp_path)
    assert pair.test == tmp_path / "images/group1/100/100001_test.jpg"
    assert pair.template == tmp_path / "images/group1/100/100001_temp.jpg"
    assert pair.annotation == tmp_path / "annotations/group1/100_not/100001.txt"
    with pytest.raises(DatasetError, match="list.txt:1"):
        lbl.parse_deeppcb_list("just-one-field\n", tmp_path)


def test_read_label_file_and_find_first(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    assert lbl.read_label_file(p) is None
    p.write_text("0 0.5 0.5 0.1 0.1\n")
    assert lbl.read_label_file(p) == "0 0.5 0.5 0.1 0.1\n"
    assert lbl.find_first([tmp_path / "missing.txt", p]) == p
    assert lbl.find_first([tmp_path / "missing.txt"]) is None


@pytest.mark.skipif(not (DEEPPCB / "list.txt").is_file(), reason="shared DeepPCB dataset not present")
def test_real_deeppcb_annotations_all_parse() -> None:
    root = DEEPPCB.resolve()
    pairs = lbl.parse_deeppcb_list((root / "list.txt").read_text(), root)
    assert len(pairs) == 1000
    total = 0
    for pair in pairs:
        boxes = lbl.parse_deeppcb(pair.annotation.read_text(), source=str(pair.annotation))
        assert all(0 <= b[0] < 6 for b in boxes)
        total += len(boxes)
    assert total == 6873  # the README's count: every defect line parsed, none merged or lost
    first = pairs[0]
    assert first.test.is_file() and first.template.is_file()
    assert lbl.find_first(lbl.deeppcb_annotation_candidates(first.test)) == first.annotation
