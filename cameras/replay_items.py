"""What a replay camera plays: the images of its source, in order, with their ground truth and references.

A source is one image, a folder of images (optionally recursive, sorted by relative path) or a
DeepPCB root (`list.txt`: each board under test and its defect-free template). Ground truth
comes from DeepPCB annotations or YOLO txt labels (parsed by `cameras.labels`); YOLO boxes stay
normalised until an item's image size is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from cameras import labels as lbl
from cameras.base import GroundTruth
from cameras.image_file import read_image
from edge.errors import CameraSourceError, DatasetError


@dataclass(slots=True)
class ReplayItem:
    path: Path
    part: str
    labelled: bool = False
    boxes: tuple[lbl.Box, ...] | None = None  # pixel boxes (DeepPCB, or YOLO once the size is known)
    yolo: tuple[lbl.YoloBox, ...] | None = None  # normalised, until converted with the image size
    truth: GroundTruth | None = None
    reference: np.ndarray | None = None  # the golden reference (grey, read-only), with `references`
    problem: str | None = None  # why this item cannot be played (no reference, undecodable): error frames

    def truth_for(self, width: int, height: int) -> GroundTruth | None:
        if not self.labelled:
            return None
        if self.truth is None:
            boxes = self.boxes if self.yolo is None else lbl.yolo_to_pixels(self.yolo, width, height)
            self.truth = GroundTruth(tuple(boxes or ()))
        return self.truth


def scan_items(path: Path, *, recursive: bool, labels: str, deeppcb_images: str) -> tuple[list[ReplayItem], bool]:
    """The items under `path` in replay order, and whether `path` was read as a DeepPCB root."""
    if path.is_file():
        return [ReplayItem(path, path.stem)], False
    if labels in ("auto", "deeppcb") and lbl.is_deeppcb_root(path):
        text = (path / "list.txt").read_text(encoding="utf-8")
        items: list[ReplayItem] = []
        for pair in lbl.parse_deeppcb_list(text, path, source=str(path / "list.txt")):
            if deeppcb_images in ("both", "test"):
                items.append(ReplayItem(pair.test, pair.test.stem))
            if deeppcb_images in ("both", "template"):
                items.append(ReplayItem(pair.template, pair.template.stem))
        return items, True
    files = path.rglob("*") if recursive else path.iterdir()
    found = [f for f in files if f.suffix.lower() in lbl.IMAGE_SUFFIXES and f.is_file()]
    found.sort(key=lambda f: f.relative_to(path).as_posix())
    return [ReplayItem(f, f.stem) for f in found], False


def detect_label_format(
    items: list[ReplayItem], root: Path, labels_dir: Path | None
) -> Literal["deeppcb", "yolo", "none"]:
    """`labels: auto`: "deeppcb" if the first board under test has an annotation, "yolo" if a
    labels folder is given or any image has a txt label, else "none"."""
    tests = [it for it in items if lbl.deeppcb_role(it.path) == "test"]
    if tests and lbl.find_first(lbl.deeppcb_annotation_candidates(tests[0].path, labels_dir)):
        return "deeppcb"
    if labels_dir is not None and labels_dir.is_dir():
        return "yolo"
    if any(lbl.find_first(lbl.yolo_label_candidates(it.path, root, None)) for it in items):
        return "yolo"
    return "none"


def attach_deeppcb_labels(items: list[ReplayItem], labels_dir: Path | None, class_names: list[str]) -> None:
    """Templates are good parts; each board under test needs its annotation."""
    for it in items:
        role = lbl.deeppcb_role(it.path)
        if role == "template":
            it.labelled, it.boxes = True, ()
        elif role == "test":
            cands = lbl.deeppcb_annotation_candidates(it.path, labels_dir)
            ann = lbl.find_first(cands)
            if ann is None:
                raise DatasetError(f"no DeepPCB annotation for {it.path} (looked for {', '.join(map(str, cands))})")
            boxes = lbl.parse_deeppcb(lbl.read_label_file(ann) or "", source=str(ann))
            _check_classes(boxes, ann, class_names)
            it.labelled, it.boxes = True, boxes


def attach_yolo_labels(
    items: list[ReplayItem], root: Path, labels_dir: Path | None, class_names: list[str] | None
) -> None:
    """Every item is labelled: a missing or empty txt in a labelled set is a good part."""
    for it in items:
        found = lbl.find_first(lbl.yolo_label_candidates(it.path, root, labels_dir))
        text = lbl.read_label_file(found) if found is not None else None
        n = len(class_names) if class_names else None
        it.yolo = lbl.parse_yolo(text or "", source=str(found), num_classes=n)
        it.labelled = True


def _check_classes(boxes: tuple[lbl.Box, ...], source: Path, class_names: list[str] | None) -> None:
    if class_names is None:
        return
    for b in boxes:
        if b[0] >= len(class_names):
            raise DatasetError(f"{source}: class {b[0]} out of range ({len(class_names)} class names)")


def reference_for(stem: str, by_stem: dict[str, Path]) -> Path | None:
    """The reference of an image: the file of the same stem, else of the longest prefix of the
    stem that ends before an '_' ("board7_0042_test" -> "board7_0042", then "board7")."""
    while True:
        found = by_stem.get(stem)
        if found is not None:
            return found
        cut = stem.rfind("_")
        if cut <= 0:
            return None
        stem = stem[:cut]


def attach_references(items: list[ReplayItem], folder: Path) -> list[str]:
    """Give every item its golden reference (grey, read-only, decoded once per file): the image of
    its stem in `folder` (see `reference_for`). An item without one, or whose reference cannot be
    read, gets `problem` set instead; returns those problems."""
    by_stem = {f.stem: f for f in sorted(folder.iterdir()) if f.suffix.lower() in lbl.IMAGE_SUFFIXES}
    loaded: dict[Path, np.ndarray | str] = {}
    problems: list[str] = []
    for it in items:
        it.reference, it.problem = None, None
        path = reference_for(it.path.stem, by_stem)
        if path is None:
            it.problem = (
                f"no reference for {it.path.name} in {folder} (a file named by its stem, or by the stem cut at an '_')"
            )
            problems.append(it.problem)
            continue
        image = loaded.get(path)
        if image is None:
            try:
                image = read_image(path, cv2.IMREAD_GRAYSCALE)
                image.flags.writeable = False
            except CameraSourceError as exc:
                image = f"reference {exc}"
            loaded[path] = image
        if isinstance(image, str):
            it.problem = image
            problems.append(image)
        else:
            it.reference = image
    return problems
