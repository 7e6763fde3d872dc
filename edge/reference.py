"""Golden-reference inspection: the part image beside the defect-free reference of the same area.

A detector that sees only the part must know every board design to tell a designed trace end
from an open circuit; one that sees the part *and* the golden reference only has to find
differences that are defects. The reference model takes a three-channel composite built from
two aligned grey images of the same size:

    channel 0 (B): the part, channel 1 (G): the reference, channel 2 (R): |part - reference|

stored and fed as a BGR image, so the engines and the training tools treat it as any colour
frame (the engines' BGR -> RGB swap happens the same way in training and in service).

`compose` is pure and allocates nothing when given `out` (and `scratch`): the service keeps
one of each per camera, the reference is loaded once.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import CameraError, DatasetError

CHANNELS = ("part", "reference", "difference")


def as_grey(image: np.ndarray, *, what: str = "image") -> np.ndarray:
    """A 2-D uint8 view of a grey image, or the first channel of a (H, W, C) one (no copy)."""
    if image.dtype != np.uint8:
        raise CameraError(f"{what}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] >= 1:
        return image[:, :, 0]
    raise CameraError(f"{what}: expected a (H, W) or (H, W, C) image, got shape {image.shape}")


def compose(
    part: np.ndarray,
    reference: np.ndarray,
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """The (H, W, 3) uint8 composite of a part image and its reference (see the module doc).

    `part` and `reference` are grey (H, W) uint8 (or colour, whose first channel is used) of one
    size. `out` (H, W, 3) uint8 and `scratch` (H, W) uint8, when given, are written in place.
    """
    p = as_grey(part, what="part image")
    r = as_grey(reference, what="reference image")
    if p.shape != r.shape:
        raise CameraError(f"part image {p.shape[::-1]} and reference {r.shape[::-1]} (w, h) differ in size")
    h, w = p.shape
    if out is None:
        out = np.empty((h, w, 3), np.uint8)
    elif out.shape != (h, w, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be ({h}, {w}, 3) uint8, got {out.shape} {out.dtype}")
    if scratch is None:
        scratch = np.empty((h, w), np.uint8)
    elif scratch.shape != (h, w) or scratch.dtype != np.uint8:
        raise ValueError(f"scratch must be ({h}, {w}) uint8, got {scratch.shape} {scratch.dtype}")
    cv2.absdiff(p, r, dst=scratch)
    cv2.merge([p, r, scratch], dst=out)
    return out


def is_reference_composite(image: np.ndarray) -> bool:
    """Whether a BGR image is a golden-reference composite: R = |B - G|, with B and G not equal."""
    if image.ndim != 3 or image.shape[2] != 3:
        return False
    part, ref, diff = image[..., 0], image[..., 1], image[..., 2]
    return bool(np.any(part != ref)) and bool(np.array_equal(diff, cv2.absdiff(part, ref)))


def check_input_kind(image: np.ndarray, reference_model: bool, where: Path) -> None:
    """DatasetError where a golden-reference model meets plain images, or a plain model composites."""
    composite = is_reference_composite(image)
    if reference_model and not composite:
        raise DatasetError(
            f"{where}: the model compares parts with golden references, but this is not a reference "
            "composite; evaluate it on a dataset written by `edge-inspect dataset convert --reference`"
        )
    if composite and not reference_model:
        raise DatasetError(
            f"{where}: a golden-reference composite, but the model takes plain frames; "
            "evaluate it on a dataset converted without --reference"
        )
