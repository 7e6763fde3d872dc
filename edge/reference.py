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

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.engines.letterbox import MAX_FRAME_SIZES
from edge.errors import CameraError, DatasetError


def as_grey(image: np.ndarray, *, what: str = "image") -> np.ndarray:
    """A 2-D uint8 view of a grey image, or the first channel of a (H, W, C) one (no copy)."""
    if image.dtype != np.uint8:
        raise CameraError(f"{what}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] >= 1:
        return image[:, :, 0]
    raise CameraError(f"{what}: expected a (H, W) or (H, W, C) image, got shape {image.shape}")


def _grey_pair(part: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey views of a part image and its reference; CameraError where their sizes differ."""
    p = as_grey(part, what="part image")
    r = as_grey(reference, what="reference image")
    if p.shape != r.shape:
        raise CameraError(f"part image {p.shape[::-1]} and reference {r.shape[::-1]} (w, h) differ in size")
    return p, r


def paste_reference(part: np.ndarray, reference: np.ndarray, boxes: Iterable[Sequence[float]]) -> None:
    """Overwrite the `boxes` (x1, y1, x2, y2 pixels, clipped, outward to whole pixels) of a grey
    `part` with the reference's pixels: a defective part repaired into a good one."""
    h, w = part.shape[:2]
    for x1, y1, x2, y2 in boxes:
        xa, ya = max(int(x1), 0), max(int(y1), 0)
        xb, yb = min(int(np.ceil(x2)), w), min(int(np.ceil(y2)), h)
        part[ya:yb, xa:xb] = reference[ya:yb, xa:xb]


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
    p, r = _grey_pair(part, reference)
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


COARSE_MIN_SIDE = 256  # from this size (shorter side) the shift is proposed at half resolution


class ReferenceAligner:
    """Finds how far a part image is shifted against its reference and shifts the reference to
    match, before `compose` (a composite of misaligned images lights up every edge).

    Translation only, in whole pixels. Phase correlation (`cv2.phaseCorrelate`, Hann-windowed,
    on float32 copies) proposes a shift; PCB artwork repeats (parallel traces, pad rows), so its
    peak can sit a period away from the truth, and the proposal, its 8 neighbours and no shift
    at all are scored by the mean absolute difference of the two images over their common
    interior; the lowest wins (no shift on a tie). A proposal beyond `max_shift_px` on either
    axis, or a correlation peak weaker than `min_response`, leaves only "no shift".
    The reference is moved, not the part, so detections stay in the frame's own pixels; the
    edge it uncovers repeats the reference's border. Buffers are kept per image size (and the
    float copy per reference array), so steady state allocates no arrays in Python.

    Images of at least `COARSE_MIN_SIDE` pixels a side are correlated at half resolution (area
    averaged): the transforms cost a quarter (640 x 640: ~14 -> ~3.5 ms on a 2-core x86), the
    proposal is then only good to about a pixel, so the neighbourhood scored at full resolution
    grows to 5 x 5 (a full-resolution L1 norm costs ~0.03 ms).
    """

    def __init__(self, max_shift_px: int, min_response: float = 0.05) -> None:
        if max_shift_px < 1:
            raise ValueError("max_shift_px must be at least 1")
        self.max_shift_px = max_shift_px
        self.min_response = min_response
        self.last_shift: tuple[int, int] = (0, 0)
        self._sized: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._float_refs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (reference, float copy)
        self._coarse: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._matrix = np.zeros((2, 3), np.float64)

    def _coarse_buffers(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 half-size scratch, float32 half-size part, half-size window) for a full size."""
        found = self._coarse.get(hw)
        if found is None:
            if len(self._coarse) >= MAX_FRAME_SIZES:
                self._coarse.clear()
            half = (hw[0] // 2, hw[1] // 2)
            window = cv2.createHanningWindow((half[1], half[0]), cv2.CV_32F)
            found = (np.empty(half, np.uint8), np.empty(half, np.float32), window)
            self._coarse[hw] = found
        return found

    def _buffers(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = self._sized.get(hw)
        if found is None:
            if len(self._sized) >= MAX_FRAME_SIZES:  # frame sizes seen: bounded
                self._sized.clear()
            window = cv2.createHanningWindow((hw[1], hw[0]), cv2.CV_32F)
            found = (np.empty(hw, np.float32), window, np.empty(hw, np.uint8))
            self._sized[hw] = found
        return found

    def _float_reference(self, reference: np.ndarray, half: bool = False) -> np.ndarray:
        held = self._float_refs.get(id(reference))
        if held is None or held[0] is not reference:
            src = reference
            if half:
                h, w = reference.shape[:2]
                src = cv2.resize(reference, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            held = (reference, src.astype(np.float32))
            if len(self._float_refs) >= 256:  # references come and go (replay sets): bounded
                self._float_refs.clear()
            self._float_refs[id(reference)] = held
        return held[1]

    def estimate(self, part: np.ndarray, reference: np.ndarray) -> tuple[int, int]:
        """(dx, dy): the part's content sits (dx, dy) pixels from where it is in the reference."""
        p, r = _grey_pair(part, reference)
        h, w = int(p.shape[0]), int(p.shape[1])
        coarse = min(h, w) >= COARSE_MIN_SIDE
        if coarse:
            small, fpart, window = self._coarse_buffers((h, w))
            cv2.resize(p, (w // 2, h // 2), dst=small, interpolation=cv2.INTER_AREA)
            np.copyto(fpart, small)
            fref = self._float_reference(r, half=True)
            (dx, dy), response = cv2.phaseCorrelate(fref, fpart, window)
            dx, dy = 2 * dx, 2 * dy
        else:
            fpart, window, _ = self._buffers((h, w))
            np.copyto(fpart, p)
            fref = self._float_reference(r)
            (dx, dy), response = cv2.phaseCorrelate(fref, fpart, window)
        sx, sy = int(round(dx)), int(round(dy))
        reach = 2 if coarse else 1  # the neighbourhood scored around the proposal
        m = self.max_shift_px
        if response < self.min_response or max(abs(sx), abs(sy)) > m + reach - 1:
            return (0, 0)
        if h <= 2 * m or w <= 2 * m:
            return (0, 0)
        inner = p[m : h - m, m : w - m]

        def cost(cx: int, cy: int) -> float:  # part[y, x] against reference[y - cy, x - cx]
            return float(cv2.norm(inner, r[m - cy : h - m - cy, m - cx : w - m - cx], cv2.NORM_L1))

        best, best_cost = (0, 0), cost(0, 0)
        for cy in range(sy - reach, sy + reach + 1):
            for cx in range(sx - reach, sx + reach + 1):
                if (cx, cy) != (0, 0) and max(abs(cx), abs(cy)) <= m:
                    c = cost(cx, cy)
                    if c < best_cost:
                        best, best_cost = (cx, cy), c
        return best

    def align(self, part: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The reference moved onto the part (grey, one buffer per size, valid until the next call)."""
        shift = self.estimate(part, reference)
        self.last_shift = shift
        r = as_grey(reference, what="reference image")
        if shift == (0, 0):
            return r
        _, _, moved = self._buffers((int(r.shape[0]), int(r.shape[1])))
        m = self._matrix
        m[0, 0] = m[1, 1] = 1.0
        m[0, 2], m[1, 2] = shift
        cv2.warpAffine(
            r, m, (r.shape[1], r.shape[0]), dst=moved, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE
        )
        return moved


class DifferenceEvidence:
    """How much real difference against its reference a detection box holds.

    A golden-reference detector sees the difference channel, and a part a pixel off its
    reference, a little brighter or noisier lights up every edge there: some of those edges
    look like an `open` or a `mousebite`. A real defect is copper where the reference has
    none or none where it has copper, beyond what a small misregistration explains. So a
    pixel of the part counts as *different* when no reference pixel within `tolerance_px`
    (a square neighbourhood) comes within `level` grey levels of it: the part is brighter than
    the neighbourhood's maximum + level, or darker than its minimum - level (the tolerance
    comparison of PCB AOI). `count` gives, per box (x1, y1, x2, y2 frame pixels, grown by
    `margin_px`), how many different pixels it holds; the decision lets a detection without
    `min_pixels` of them pass (`DecisionConfig.difference_evidence`).

    Buffers are kept per frame size (bounded), so steady state allocates no image arrays; only
    detection boxes are read, so the cost is a few small morphology operations per candidate.
    """

    def __init__(self, tolerance_px: int = 1, level: int = 48, margin_px: int = 2) -> None:
        if tolerance_px < 0 or margin_px < 0 or not 0 < level < 256:
            raise ValueError("tolerance_px and margin_px must be >= 0 and level within 1..255")
        self.tolerance_px = tolerance_px
        self.level = level
        self.margin_px = margin_px
        size = 2 * tolerance_px + 1
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
        self._sized: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _buffers(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        found = self._sized.get(hw)
        if found is None:
            if len(self._sized) >= MAX_FRAME_SIZES:
                self._sized.clear()
            found = (np.empty(hw, np.uint8), np.empty(hw, np.uint8))
            self._sized[hw] = found
        return found

    def count(
        self, part: np.ndarray, reference: np.ndarray, boxes: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Different pixels in each of `boxes` ((n, 4) xyxy): int64 (n,), written to `out` if given."""
        p, r = _grey_pair(part, reference)
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = b.shape[0]
        if out is None:
            out = np.zeros(n, np.int64)
        elif out.shape != (n,):
            raise ValueError(f"out must have shape ({n},), got {out.shape}")
        h, w = p.shape
        hi, lo = self._buffers((h, w))
        t, m = self.tolerance_px, self.margin_px
        for i in range(n):
            x1, y1, x2, y2 = b[i]
            xa, ya = max(int(np.floor(x1)) - m, 0), max(int(np.floor(y1)) - m, 0)
            xb, yb = min(int(np.ceil(x2)) + m, w), min(int(np.ceil(y2)) + m, h)
            if xb <= xa or yb <= ya:
                out[i] = 0
                continue
            # the reference window reaches `t` further so its neighbourhood is whole at the box edge
            wa, wb, va, vb = max(xa - t, 0), min(xb + t, w), max(ya - t, 0), min(yb + t, h)
            # channels of a composite are strided views: OpenCV needs rows of adjacent pixels
            ref = np.ascontiguousarray(r[va:vb, wa:wb])
            win_hi, win_lo = hi[va:vb, wa:wb], lo[va:vb, wa:wb]
            if t > 0:
                cv2.dilate(ref, self._kernel, dst=win_hi, borderType=cv2.BORDER_REPLICATE)
                cv2.erode(ref, self._kernel, dst=win_lo, borderType=cv2.BORDER_REPLICATE)
            else:
                np.copyto(win_hi, ref)
                np.copyto(win_lo, ref)
            inner = (slice(ya - va, yb - va), slice(xa - wa, xb - wa))
            part_box = np.ascontiguousarray(p[ya:yb, xa:xb])
            over, under = win_hi[inner], win_lo[inner]
            # over := part - max(neighbourhood), under := min(neighbourhood) - part (saturating)
            cv2.subtract(part_box, over, dst=over)
            cv2.subtract(under, part_box, dst=under)
            cv2.max(over, under, dst=over)
            out[i] = int(np.count_nonzero(over > self.level)) if over.size else 0
        return out


def difference_pixels(
    part: np.ndarray,
    reference: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    tolerance_px: int = 1,
    level: int = 48,
    margin_px: int = 2,
) -> np.ndarray:
    """`DifferenceEvidence(tolerance_px, level, margin_px).count(part, reference, boxes)`."""
    return DifferenceEvidence(tolerance_px, level, margin_px).count(part, reference, np.asarray(boxes, np.float64))
