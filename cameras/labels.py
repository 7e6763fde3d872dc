"""Ground-truth label formats for replayed images: YOLO txt and DeepPCB.

Parsing is pure (text in, boxes out) so it is unit-tested without files; the few helpers that
touch the file system only read and are named `read_*` / `find_*`.

Boxes come out as `(cls, x1, y1, x2, y2)` in pixels, the shape `cameras.base.GroundTruth` holds.

YOLO (Ultralytics): one object per line, `cls cx cy w h` normalised to 0..1 (a segmentation line,
`cls x1 y1 x2 y2 ...`, is reduced to its bounding box). The label of `.../images/a/x.jpg` is
`.../labels/a/x.txt`, or `x.txt` next to the image. In a labelled set an empty or missing txt
is a good part.

DeepPCB: one defect per line, `x1 y1 x2 y2 type` in pixels with type 1..6 (open, short,
mousebite, spur, spurious copper, pin-hole) mapped to class 0..5. The annotation of
`images/<group>/<id>/<n>_test.jpg` is `annotations/<group>/<id>_not/<n>.txt` (the original
repository keeps `<group>/<id>_not/` beside `<group>/<id>/` instead); `<n>_temp.jpg` is the
defect-free template: a good part. `list.txt` at the root pairs them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.errors import DatasetError

Box = tuple[int, float, float, float, float]
"""(cls, x1, y1, x2, y2) in pixels."""

YoloBox = tuple[int, float, float, float, float]
"""(cls, cx, cy, w, h) normalised to the image size."""

DEEPPCB_CLASS_NAMES: tuple[str, ...] = ("open", "short", "mousebite", "spur", "spurious_copper", "pin_hole")
"""DeepPCB defect types 1..6, as classes 0..5."""

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
"""Image files of a dataset, a replay folder or a calibration set (lower-case suffixes)."""

_SPLIT = re.compile(r"[\s,]+")


def _fields(line: str) -> list[str]:
    return [f for f in _SPLIT.split(line.strip()) if f]


# -- YOLO ----------------------------------------------------------------------------------------
def parse_yolo(text: str, *, source: str = "<text>", num_classes: int | None = None) -> tuple[YoloBox, ...]:
    """Parse a YOLO label file's text into normalised boxes.

    Blank lines and `#` comments are skipped. Raises DatasetError naming `source` and the line
    for a malformed line, a negative or out-of-range class, or a non-finite coordinate.
    """
    boxes: list[YoloBox] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = _fields(line)
        where = f"{source}:{lineno}"
        try:
            cls_f = float(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise DatasetError(f"{where}: not a YOLO label line: {raw.strip()!r}") from None
        if not cls_f.is_integer() or cls_f < 0:
            raise DatasetError(f"{where}: class must be a non-negative integer, got {fields[0]!r}")
        cls = int(cls_f)
        if num_classes is not None and cls >= num_classes:
            raise DatasetError(f"{where}: class {cls} out of range (the set has {num_classes} classes)")
        if any(v != v or v in (float("inf"), float("-inf")) for v in values):
            raise DatasetError(f"{where}: non-finite coordinate in {raw.strip()!r}")
        if len(values) == 4:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise DatasetError(f"{where}: negative box size in {raw.strip()!r}")
        elif len(values) >= 6 and len(values) % 2 == 0:  # segmentation polygon: its bounding box
            xs, ys = values[0::2], values[1::2]
            x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        else:
            raise DatasetError(
                f"{where}: expected 'cls cx cy w h' (or a polygon 'cls x1 y1 x2 y2 x3 y3 ...'), "
                f"got {len(fields)} fields"
            )
        boxes.append((cls, cx, cy, w, h))
    return tuple(boxes)


def yolo_to_pixels(boxes: Sequence[YoloBox], width: int, height: int) -> tuple[Box, ...]:
    """Normalised (cls, cx, cy, w, h) -> pixel (cls, x1, y1, x2, y2), clipped to the image."""
    out: list[Box] = []
    for cls, cx, cy, w, h in boxes:
        x1 = min(max((cx - w / 2) * width, 0.0), float(width))
        y1 = min(max((cy - h / 2) * height, 0.0), float(height))
        x2 = min(max((cx + w / 2) * width, 0.0), float(width))
        y2 = min(max((cy + h / 2) * height, 0.0), float(height))
        out.append((cls, x1, y1, x2, y2))
    return tuple(out)


def yolo_label_candidates(image: Path, root: Path | None = None, labels_dir: Path | None = None) -> list[Path]:
    """Where a YOLO label for `image` may be, most specific first (no file system access).

    With `labels_dir`: `labels_dir/<path relative to root>.txt`, then `labels_dir/<stem>.txt`.
    Otherwise the Ultralytics rule (the last `images` folder in the path becomes `labels`), then
    `<stem>.txt` next to the image.
    """
    out: list[Path] = []
    if labels_dir is not None:
        if root is not None:
            try:
                out.append(labels_dir / image.relative_to(root).with_suffix(".txt"))
            except ValueError:
                pass
        out.append(labels_dir / (image.stem + ".txt"))
    else:
        parts = list(image.parts)
        for i in range(len(parts) - 2, -1, -1):
            if parts[i] == "images":
                parts[i] = "labels"
                out.append(Path(*parts).with_suffix(".txt"))
                break
        out.append(image.with_suffix(".txt"))
    unique: list[Path] = []
    for p in out:
        if p not in unique:
            unique.append(p)
    return unique


# -- DeepPCB ------------------------------------------------------------------------------------
def parse_deeppcb(text: str, *, source: str = "<text>") -> tuple[Box, ...]:
    """Parse a DeepPCB annotation (`x1 y1 x2 y2 type`, type 1..6) into class 0..5 pixel boxes.

    Fields are separated by spaces or commas; blank lines are skipped. Raises DatasetError naming
    `source` and the line for a malformed line, an unknown type or an empty or inverted box."""
    boxes: list[Box] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = _fields(raw)
        if not fields:
            continue
        where = f"{source}:{lineno}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 'x1 y1 x2 y2 type', got {raw.strip()!r}")
        try:
            x1, y1, x2, y2 = (float(v) for v in fields[:4])
            kind = int(fields[4])
        except ValueError:
            raise DatasetError(f"{where}: non-numeric value in a DeepPCB annotation line: {raw.strip()!r}") from None
        if not 1 <= kind <= len(DEEPPCB_CLASS_NAMES):
            raise DatasetError(f"{where}: defect type {kind} outside 1..{len(DEEPPCB_CLASS_NAMES)}")
        if x2 < x1 or y2 < y1:
            raise DatasetError(f"{where}: box corners out of order in {raw.strip()!r}")
        if x2 == x1 or y2 == y1:
            raise DatasetError(f"{where}: empty box {raw.strip()!r}")
        boxes.append((kind - 1, x1, y1, x2, y2))
    return tuple(boxes)


_DEEPPCB_NAME = re.compile(r"^(?P<n>.+)_(?P<kind>test|temp)$")


def deeppcb_role(image: Path) -> str | None:
    """'test' for `<n>_test.*`, 'template' for `<n>_temp.*`, None for any other name."""
    m = _DEEPPCB_NAME.match(image.stem)
    if m is None:
        return None
    return "test" if m.group("kind") == "test" else "template"


def deeppcb_annotation_candidates(image: Path, labels_dir: Path | None = None) -> list[Path]:
    """Where the annotation of a DeepPCB `<n>_test.jpg` in `.../<group>/<id>/` may be (no I/O).

    In order: `labels_dir/<group>/<id>_not/<n>.txt` and `labels_dir/<id>_not/<n>.txt` when
    given; the released layout `.../annotations/<group>/<id>_not/<n>.txt` mirroring the last
    `images` folder; the original repository's `.../<group>/<id>_not/<n>.txt` beside the image
    folder.
    """
    m = _DEEPPCB_NAME.match(image.stem)
    if m is None:
        return []
    n = m.group("n")
    folder = image.parent
    name = f"{n}.txt"
    not_dir = f"{folder.name}_not"
    out: list[Path] = []
    if labels_dir is not None:
        out.append(labels_dir / folder.parent.name / not_dir / name)
        out.append(labels_dir / not_dir / name)
    parts = list(folder.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "annotations"
            out.append(Path(*parts).parent / not_dir / name)
            break
    out.append(folder.parent / not_dir / name)
    return out


@dataclass(frozen=True, slots=True)
class DeepPcbPair:
    """One `list.txt` entry: the board under test, its template and the test's annotation."""

    test: Path
    template: Path
    annotation: Path


def parse_deeppcb_list(text: str, root: Path, *, source: str = "list.txt") -> list[DeepPcbPair]:
    """Parse DeepPCB's `list.txt` (`<group>/<id>/<n>.jpg <group>/<id>_not/<n>.txt` per line).

    Images are under `root/images` and annotations under `root/annotations` when the root has
    them (the released layout), else directly under `root` (the original repository).
    """
    pairs: list[DeepPcbPair] = []
    images = root / "images" if (root / "images").is_dir() else root
    annotations = root / "annotations" if (root / "annotations").is_dir() else root
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(f"{source}:{lineno}: expected '<image> <annotation>', got {raw.strip()!r}")
        img = Path(fields[0])
        base = img.with_name(img.stem)
        suffix = img.suffix or ".jpg"
        pairs.append(
            DeepPcbPair(
                test=images / base.parent / f"{base.name}_test{suffix}",
                template=images / base.parent / f"{base.name}_temp{suffix}",
                annotation=annotations / fields[1],
            )
        )
    return pairs


def is_deeppcb_root(folder: Path) -> bool:
    """A DeepPCB root folder: has `list.txt` and an `images/` (released) or group folders."""
    return (folder / "list.txt").is_file() and (
        (folder / "images").is_dir() or any(p.is_dir() and p.name.startswith("group") for p in folder.iterdir())
    )


def read_label_file(path: Path) -> str | None:
    """The text of a label file, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DatasetError(f"cannot read label file {path}: {exc}") from exc


def find_first(paths: Sequence[Path]) -> Path | None:
    """The first of `paths` that is a file."""
    for p in paths:
        if p.is_file():
            return p
    return None
