"""Convert DeepPCB and Pascal VOC annotations into an Ultralytics (YOLO txt) dataset.

Splits are made **by group** so that near-duplicate crops of one board never land on both
sides. DeepPCB's defect-free templates go in as background images (good parts, empty label).
Pure file work: no Ultralytics or torch needed.
"""

from __future__ import annotations

import logging
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import yaml

from cameras import labels as lbl
from edge.engines.model import INPUT_KIND_KEY, REFERENCE_COMPOSITE
from edge.errors import DatasetError
from edge.reference import ReferenceAligner, compose, paste_reference

log = logging.getLogger(__name__)

DEEPPCB_CLASSES = lbl.DEEPPCB_CLASS_NAMES  # one tuple, where the format is parsed
# Groups held out for validation by default: 200 of the 1,000 pairs, three whole groups.
DEEPPCB_VAL_GROUPS: tuple[str, ...] = ("group44000", "group50600", "group77000")


@dataclass(frozen=True)
class Box:
    """One labelled defect in pixel coordinates (top-left, bottom-right)."""

    cls: int
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Sample:
    """One image of a dataset: its file, size, group and boxes (empty for a good part).

    With a `reference` (golden-reference pairs, `edge.reference`), the image written is the
    composite of `image` and `reference`, after pasting the reference over the `repair` boxes
    of `image` (how a good part is made from a defective one: its defects replaced by the
    defect-free board, the capture noise elsewhere kept).
    """

    image: Path
    width: int
    height: int
    group: str
    boxes: list[Box] = field(default_factory=list)
    stem: str = ""
    reference: Path | None = None
    repair: list[Box] = field(default_factory=list)

    @property
    def defective(self) -> bool:
        return bool(self.boxes)


@dataclass
class ConvertReport:
    """What a conversion wrote: image, box and good-part counts per split."""

    out_dir: Path
    data_yaml: Path
    images: dict[str, int]
    boxes: dict[str, int]
    good_parts: dict[str, int]
    groups: dict[str, list[str]]

    def as_dict(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "data_yaml": str(self.data_yaml),
            "images": self.images,
            "boxes": self.boxes,
            "good_parts": self.good_parts,
            "groups": self.groups,
        }


def parse_deeppcb_annotation(path: Path) -> list[Box]:
    """Read a DeepPCB annotation file (`cameras.labels.parse_deeppcb`: `x1 y1 x2 y2 type`, type 1..6)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read annotation ({exc})") from exc
    return [Box(*box) for box in lbl.parse_deeppcb(text, source=str(path))]


def load_deeppcb(root: Path, include_templates: bool = True, reference: bool = False) -> list[Sample]:
    """Read a DeepPCB folder (its `list.txt`) into samples; templates become good parts.

    With `reference`, every sample is a golden-reference pair (`Sample.reference` = the
    template): the test image with its defects, and (for `include_templates`) a good part made
    by repairing the test image's defect boxes from the template. The template against itself
    would be no test at all (a zero difference), so it is not used as a good part here.
    """
    listing = root / "list.txt"
    if not listing.is_file():
        raise DatasetError(f"{root}: not a DeepPCB folder (no list.txt)")
    samples: list[Sample] = []
    pairs = lbl.parse_deeppcb_list(listing.read_text(), root, source=str(listing))
    for pair in pairs:
        test_img, temp_img = pair.test, pair.template
        stem = test_img.stem.removesuffix("_test")  # e.g. 20085000
        group = test_img.parent.parent.name  # <group>/<id>/<n>_test.jpg
        if not test_img.is_file():
            raise DatasetError(f"{listing}: missing image {test_img}")
        boxes = parse_deeppcb_annotation(pair.annotation)
        if reference:
            if not temp_img.is_file():
                raise DatasetError(f"{listing}: missing template {temp_img}")
            samples.append(Sample(test_img, 640, 640, group, boxes, stem=f"{stem}_test", reference=temp_img))
            if include_templates:
                good = Sample(test_img, 640, 640, group, [], stem=f"{stem}_good", reference=temp_img, repair=boxes)
                samples.append(good)
            continue
        samples.append(Sample(test_img, 640, 640, group, boxes, stem=f"{stem}_test"))
        if include_templates and temp_img.is_file():
            samples.append(Sample(temp_img, 640, 640, group, [], stem=f"{stem}_temp"))
    _fill_sizes(samples)
    return samples


def parse_voc_annotation(path: Path, class_names: Sequence[str]) -> tuple[str, int, int, list[Box]]:
    """Parse one Pascal VOC XML file: (image file name, width, height, boxes)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{path}: not a readable Pascal VOC XML file ({exc})") from exc
    filename = root.findtext("filename")
    if not filename:
        raise DatasetError(f"{path}: <filename> is missing")
    try:
        width = int(root.findtext("size/width") or 0)
        height = int(root.findtext("size/height") or 0)
    except ValueError as exc:
        raise DatasetError(f"{path}: <size> is not numeric") from exc
    boxes: list[Box] = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names:
            raise DatasetError(f"{path}: object {i} has class {name!r}, not one of {list(class_names)}")
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: object {i} has no <bndbox>")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise DatasetError(f"{path}: object {i} <bndbox> is not numeric") from exc
        if not (x2 > x1 and y2 > y1):
            raise DatasetError(f"{path}: object {i} has an empty box")
        # VOC coordinates are 1-based inclusive pixels.
        boxes.append(Box(class_names.index(name), x1 - 1, y1 - 1, x2, y2))
    return filename, width, height, boxes


def load_voc(root: Path, class_names: Sequence[str]) -> list[Sample]:
    """Read a VOC folder (`Annotations/*.xml` + `JPEGImages/`); group = first `_`-part of the name."""
    ann_dir = root / "Annotations"
    img_dir = root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DatasetError(f"{root}: not a Pascal VOC folder (no Annotations/)")
    samples: list[Sample] = []
    for xml_path in sorted(ann_dir.glob("*.xml")):
        filename, w, h, boxes = parse_voc_annotation(xml_path, class_names)
        image = img_dir / filename
        if not image.is_file():
            raise DatasetError(f"{xml_path}: image {image} does not exist")
        group = image.stem.split("_")[0]
        samples.append(Sample(image, w, h, group, boxes, stem=image.stem))
    _fill_sizes(samples)
    return samples


def _fill_sizes(samples: Sequence[Sample]) -> None:
    """Read the real size of images whose annotation does not state it (VOC size 0)."""
    for s in samples:
        if s.width > 0 and s.height > 0:
            continue
        img = cv2.imread(str(s.image), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DatasetError(f"{s.image}: cannot decode image")
        s.height, s.width = img.shape[:2]


# A converted image is named `<group>_<stem>`: its group is the name up to the first "_".
DEFAULT_GROUP_PATTERN = r"^([^_]+)_"


def image_groups(images: Sequence[Path], pattern: str = DEFAULT_GROUP_PATTERN) -> list[str]:
    """Each image's group: the first capture group of `pattern` searched in its file name."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"group pattern {pattern!r} is not a valid regex: {exc}") from exc
    if rx.groups < 1:
        raise DatasetError(f"group pattern {pattern!r} needs a capture group, e.g. '^([^_]+)_'")
    groups: list[str] = []
    for image in images:
        match = rx.search(Path(image).name)
        if match is None or not match.group(1):
            raise DatasetError(f"{image}: the group pattern {pattern!r} does not name a group in this file name")
        groups.append(match.group(1))
    return groups


def split_by_group(samples: Sequence[Sample], val_groups: Sequence[str]) -> dict[str, list[Sample]]:
    """Split samples into train/val so that every group lies wholly on one side."""
    known = {s.group for s in samples}
    missing = [g for g in val_groups if g not in known]
    if missing:
        raise DatasetError(f"validation groups {missing} are not in the data (groups: {sorted(known)})")
    val = set(val_groups)
    return {
        "train": [s for s in samples if s.group not in val],
        "val": [s for s in samples if s.group in val],
    }


def yolo_label_lines(sample: Sample) -> list[str]:
    """Boxes as YOLO `cls cx cy w h` lines, normalised and clipped to the image."""
    lines = []
    for b in sample.boxes:
        x1 = min(max(b.x1, 0.0), sample.width)
        x2 = min(max(b.x2, 0.0), sample.width)
        y1 = min(max(b.y1, 0.0), sample.height)
        y2 = min(max(b.y2, 0.0), sample.height)
        cx = (x1 + x2) / 2 / sample.width
        cy = (y1 + y2) / 2 / sample.height
        w = (x2 - x1) / sample.width
        h = (y2 - y1) / sample.height
        lines.append(f"{b.cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_yolo_dataset(
    splits: dict[str, list[Sample]], out_dir: Path, class_names: Sequence[str], align_px: int = 0
) -> ConvertReport:
    """Write `images/<split>/`, `labels/<split>/` and `data.yaml` under out_dir.

    `align_px` > 0: reference pairs are aligned (whole pixels, up to that shift) before composing.
    """
    aligner = ReferenceAligner(align_px) if align_px > 0 else None
    if out_dir.exists():
        shutil.rmtree(out_dir)
    counts: dict[str, int] = {}
    boxes: dict[str, int] = {}
    good: dict[str, int] = {}
    groups: dict[str, list[str]] = {}
    for split, samples in splits.items():
        img_dir = out_dir / "images" / split
        lbl_dir = out_dir / "labels" / split
        img_dir.mkdir(parents=True)
        lbl_dir.mkdir(parents=True)
        for s in samples:
            name = f"{s.group}_{s.stem}"
            if s.reference is None:
                shutil.copyfile(s.image, img_dir / f"{name}{s.image.suffix.lower()}")
            else:
                write_reference_composite(s, img_dir / f"{name}.png", aligner)
            lines = yolo_label_lines(s)
            (lbl_dir / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        counts[split] = len(samples)
        boxes[split] = sum(len(s.boxes) for s in samples)
        good[split] = sum(1 for s in samples if not s.boxes)
        groups[split] = sorted({s.group for s in samples})
    data_yaml = out_dir / "data.yaml"
    doc: dict[str, object] = {
        "path": str(out_dir.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(class_names)),
    }
    if any(s.reference is not None for samples in splits.values() for s in samples):
        doc[INPUT_KIND_KEY] = REFERENCE_COMPOSITE  # `train --export` marks the model with it
        if align_px:
            doc["reference_align_px"] = align_px  # serve with reference_align.max_shift_px alike
    data_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    report = ConvertReport(out_dir, data_yaml, counts, boxes, good, groups)
    log.info("wrote %s: %s", out_dir, report.as_dict())
    return report


def dataset_input_kind(data_yaml: Path) -> str | None:
    """What a converted dataset's images are: `REFERENCE_COMPOSITE`, or None for plain frames."""
    try:
        doc = yaml.safe_load(data_yaml.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{data_yaml}: cannot read ({exc})") from exc
    kind = doc.get(INPUT_KIND_KEY) if isinstance(doc, dict) else None
    return str(kind) if kind is not None else None


def write_reference_composite(sample: Sample, dst: Path, aligner: ReferenceAligner | None = None) -> None:
    """Write a pair sample's composite (part, reference, difference) as a lossless PNG; with an
    `aligner`, the reference is first moved onto the part (as the service's `reference_align`)."""
    assert sample.reference is not None
    part = cv2.imread(str(sample.image), cv2.IMREAD_GRAYSCALE)
    ref = cv2.imread(str(sample.reference), cv2.IMREAD_GRAYSCALE)
    if part is None or ref is None:
        raise DatasetError(f"cannot read {sample.image if part is None else sample.reference}")
    if aligner is not None:
        ref = aligner.align(part, ref)  # its buffer: read below, before any next alignment
    paste_reference(part, ref, [(b.x1, b.y1, b.x2, b.y2) for b in sample.repair])
    if not cv2.imwrite(str(dst), compose(part, ref), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise DatasetError(f"cannot write {dst}")


def convert(
    source: Path,
    out_dir: Path,
    fmt: str = "deeppcb",
    val_groups: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    include_templates: bool = True,
    train_good_fraction: float = 1.0,
    reference: bool = False,
    align_px: int = 0,
) -> ConvertReport:
    """Convert a DeepPCB or VOC folder into a split YOLO dataset under out_dir.

    `train_good_fraction` keeps that share of the good parts (backgrounds) in the training
    split, evenly spaced, to cut training cost; validation always keeps all of them.
    `reference` (DeepPCB only) writes golden-reference composites (see `load_deeppcb`), with
    `align_px` > 0 each pair aligned first (up to that many pixels).
    """
    if align_px and not reference:
        raise DatasetError("--align-px aligns golden-reference pairs; it needs --reference")
    if reference and fmt != "deeppcb":
        raise DatasetError("golden-reference pairs (--reference) come from DeepPCB's templates; use --format deeppcb")
    if fmt == "deeppcb":
        names: Sequence[str] = class_names or DEEPPCB_CLASSES
        samples = load_deeppcb(source, include_templates=include_templates, reference=reference)
        vg = val_groups if val_groups is not None else DEEPPCB_VAL_GROUPS
    elif fmt == "voc":
        if not class_names:
            raise DatasetError("Pascal VOC conversion needs the class names (--classes a,b,c)")
        names = class_names
        samples = load_voc(source, names)
        if val_groups is None:
            # Every fifth group (sorted by name) goes to validation.
            vg = sorted({s.group for s in samples})[4::5] or sorted({s.group for s in samples})[-1:]
        else:
            vg = val_groups
    else:
        raise DatasetError(f"unknown annotation format {fmt!r}; use 'deeppcb' or 'voc'")
    if not samples:
        raise DatasetError(f"{source}: no samples found")
    splits = split_by_group(samples, vg)
    splits["train"] = thin_good_parts(splits["train"], train_good_fraction)
    return write_yolo_dataset(splits, out_dir, names, align_px=align_px)


def thin_good_parts(samples: Sequence[Sample], fraction: float) -> list[Sample]:
    """Keep every defective sample and an evenly spaced `fraction` of the good ones."""
    if not 0.0 <= fraction <= 1.0:
        raise DatasetError(f"good-part fraction must be within 0..1, got {fraction}")
    kept: list[Sample] = []
    acc = 0.0
    for s in samples:
        if s.defective:
            kept.append(s)
            continue
        acc += fraction
        if acc >= 1.0 - 1e-9:
            acc -= 1.0
            kept.append(s)
    return kept
