"""Golden-reference training pairs that look like a line's captures: seamless repairs and capture drift.

Two things made the golden-reference model reject good parts it had never seen:
- its good parts were test images with each defect box pasted over from the template, a hard
  rectangle of the template's own pixels (its noise, its alignment) inside the part;
- it had seen DeepPCB's residual misalignment and nothing more, so a part a pixel or two off its
  reference, a little brighter, or noisier, lights up every edge of the difference channel and
  some of those edges look like an `open` or a `mousebite`.

This module makes training pairs closer to a line's second capture of a good board:
- `feathered_repair`: only the pixels that differ inside a defect box (the defect, grown by a
  pixel or two) take the reference's values, through a soft mask, so the rest of the box keeps
  the part's own capture and the repair has no seam;
- `sample_drift` / `apply_drift`: the pair is misregistered (the reference moved by a whole or
  sub-pixel offset, so the labels in the part's pixels stay valid), and the part gets a gain, a
  little blur and sensor noise.

`write_drift_dataset` (also `python -m edge.training.drift SRC OUT`) writes a YOLO dataset of
such composites for training; its validation split is written exactly as `dataset convert
--reference` writes it, so figures stay comparable with earlier models. Pure numpy/OpenCV.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from edge.engines.model import INPUT_KIND_KEY, REFERENCE_COMPOSITE
from edge.errors import DatasetError
from edge.reference import compose
from edge.training.dataset import (
    DEEPPCB_CLASSES,
    DEEPPCB_VAL_GROUPS,
    Sample,
    load_deeppcb,
    split_by_group,
    write_reference_composite,
    yolo_label_lines,
)

log = logging.getLogger(__name__)


def feathered_repair(
    part: np.ndarray,
    reference: np.ndarray,
    boxes: Iterable[Sequence[float]],
    *,
    diff_threshold: int = 48,
    grow_px: int = 2,
    feather_px: float = 1.0,
) -> None:
    """Repair the defects in `boxes` (x1, y1, x2, y2) of a grey uint8 `part` in place.

    Inside each box (grown by `grow_px`), the pixels where part and reference differ by more
    than `diff_threshold`, dilated by `grow_px`, take the reference's values through a mask
    softened by a Gaussian of `feather_px`; every other pixel keeps the part's own capture.
    """
    if part.shape != reference.shape or part.dtype != np.uint8 or reference.dtype != np.uint8:
        raise ValueError("part and reference must be grey uint8 images of one size")
    h, w = part.shape[:2]
    pad = grow_px + int(np.ceil(3 * feather_px)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1, 2 * grow_px + 1))
    for x1, y1, x2, y2 in boxes:
        # The box grown by grow_px is where the mask may be; the window adds room to feather.
        bx1, by1 = max(int(x1) - grow_px, 0), max(int(y1) - grow_px, 0)
        bx2, by2 = min(int(np.ceil(x2)) + grow_px, w), min(int(np.ceil(y2)) + grow_px, h)
        if bx2 <= bx1 or by2 <= by1:
            continue
        wx1, wy1, wx2, wy2 = max(bx1 - pad, 0), max(by1 - pad, 0), min(bx2 + pad, w), min(by2 + pad, h)
        p = part[wy1:wy2, wx1:wx2]
        r = reference[wy1:wy2, wx1:wx2]
        mask: np.ndarray = np.zeros(p.shape, np.uint8)
        inner = (slice(by1 - wy1, by2 - wy1), slice(bx1 - wx1, bx2 - wx1))
        mask[inner] = cv2.absdiff(p, r)[inner] > diff_threshold
        if grow_px > 0:
            mask = cv2.dilate(mask, kernel)
        clip = np.zeros_like(mask)
        clip[inner] = 1
        alpha: np.ndarray = (mask & clip).astype(np.float32)
        if feather_px > 0:
            alpha = cv2.GaussianBlur(alpha, (0, 0), feather_px)
            alpha[mask.astype(bool) & clip.astype(bool)] = 1.0  # the defect itself goes whole
        blended = alpha * r.astype(np.float32) + (1.0 - alpha) * p.astype(np.float32)
        part[wy1:wy2, wx1:wx2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Drift:
    """One capture's drift against the reference: the reference's offset (px), the part's gain,
    blur (Gaussian sigma, 0: none) and sensor noise (Gaussian sigma, grey levels)."""

    dx: float = 0.0
    dy: float = 0.0
    gain: float = 1.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0

    @property
    def none(self) -> bool:
        return self == Drift()


@dataclass(frozen=True)
class DriftSpec:
    """The spread `sample_drift` draws from."""

    p_clean: float = 0.2  # share of pairs left as captured
    max_shift_px: float = 2.0
    p_whole_px: float = 0.5  # whole-pixel offsets (else uniform sub-pixel ones)
    gain: tuple[float, float] = (0.9, 1.1)
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 0.8)
    noise_sigma: tuple[float, float] = (0.0, 4.0)


def sample_drift(rng: np.random.Generator, spec: DriftSpec = DriftSpec()) -> Drift:
    """Draw one capture's drift."""
    if rng.random() < spec.p_clean:
        return Drift()
    m = spec.max_shift_px
    if rng.random() < spec.p_whole_px:
        dx, dy = (float(v) for v in rng.integers(-int(m), int(m) + 1, size=2))
    else:
        dx, dy = (float(v) for v in rng.uniform(-m, m, size=2))
    blur = float(rng.uniform(*spec.blur_sigma)) if rng.random() < spec.p_blur else 0.0
    return Drift(
        dx=dx,
        dy=dy,
        gain=float(rng.uniform(*spec.gain)),
        blur_sigma=blur,
        noise_sigma=float(rng.uniform(*spec.noise_sigma)),
    )


def shift_image(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """A grey image moved by (dx, dy) px (bilinear for fractions), its edge repeated."""
    if dx == 0.0 and dy == 0.0:
        return image.copy()
    whole = float(dx).is_integer() and float(dy).is_integer()
    m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    flags = cv2.INTER_NEAREST if whole else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, image.shape[1::-1], flags=flags, borderMode=cv2.BORDER_REPLICATE)


def degrade(
    image: np.ndarray, gain: float, noise_sigma: float, rng: np.random.Generator, blur_sigma: float = 0.0
) -> np.ndarray:
    """A grey capture with a gain, an optional Gaussian blur and Gaussian sensor noise (new uint8)."""
    out: np.ndarray = image.astype(np.float32)
    if blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur_sigma)
    if gain != 1.0:
        out *= gain
    if noise_sigma > 0:
        out += rng.normal(0.0, noise_sigma, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def apply_drift(
    part: np.ndarray, reference: np.ndarray, drift: Drift, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(part, reference) after `drift`: the reference moved (labels in the part's pixels stay
    valid), the part degraded. New arrays; the inputs are not changed."""
    ref = shift_image(reference, drift.dx, drift.dy)
    p = degrade(part, drift.gain, drift.noise_sigma, rng, drift.blur_sigma)
    return p, ref


def drifted_composite(
    sample: Sample, rng: np.random.Generator, spec: DriftSpec = DriftSpec()
) -> tuple[np.ndarray, Drift]:
    """The composite of a pair sample as a line might capture it: good parts repaired seamlessly
    (`feathered_repair`), then the pair drifted (`sample_drift`)."""
    if sample.reference is None:
        raise DatasetError(f"{sample.image}: not a golden-reference pair")
    part = cv2.imread(str(sample.image), cv2.IMREAD_GRAYSCALE)
    ref = cv2.imread(str(sample.reference), cv2.IMREAD_GRAYSCALE)
    if part is None or ref is None:
        raise DatasetError(f"cannot read {sample.image if part is None else sample.reference}")
    if sample.repair:
        feathered_repair(part, ref, [(b.x1, b.y1, b.x2, b.y2) for b in sample.repair])
    drift = sample_drift(rng, spec)
    if not drift.none:
        part, ref = apply_drift(part, ref, drift, rng)
    return compose(part, ref), drift


def write_drift_dataset(
    source: Path,
    out_dir: Path,
    *,
    val_groups: Sequence[str] = DEEPPCB_VAL_GROUPS,
    good_copies: int = 1,
    defective_copies: int = 1,
    seed: int = 0,
    spec: DriftSpec = DriftSpec(),
) -> dict[str, object]:
    """A DeepPCB golden-reference dataset whose training split is drifted and seamlessly repaired.

    Training split: every defective pair `defective_copies` times and every good part (all of
    them) `good_copies` times, each copy with its own drift. Validation split: as `dataset
    convert --reference` writes it (hard-pasted repairs, no drift), for comparable figures.
    """
    if good_copies < 1 or defective_copies < 1:
        raise DatasetError("good_copies and defective_copies must be at least 1")
    samples = load_deeppcb(source, include_templates=True, reference=True)
    splits = split_by_group(samples, val_groups)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    drifted = 0
    for split, items in splits.items():
        img_dir = out_dir / "images" / split
        lbl_dir = out_dir / "labels" / split
        img_dir.mkdir(parents=True)
        lbl_dir.mkdir(parents=True)
        n = 0
        for s in items:
            lines = "".join(line + "\n" for line in yolo_label_lines(s))
            if split != "train":
                name = f"{s.group}_{s.stem}"
                write_reference_composite(s, img_dir / f"{name}.png")
                (lbl_dir / f"{name}.txt").write_text(lines)
                n += 1
                continue
            for k in range(defective_copies if s.defective else good_copies):
                name = f"{s.group}_{s.stem}" + (f"-d{k}" if k else "")
                image, drift = drifted_composite(s, rng, spec)
                drifted += not drift.none
                if not cv2.imwrite(str(img_dir / f"{name}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                    raise DatasetError(f"cannot write {img_dir / name}.png")
                (lbl_dir / f"{name}.txt").write_text(lines)
                n += 1
        counts[split] = n
    doc: dict[str, object] = {
        "path": str(out_dir.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(DEEPPCB_CLASSES)),
        INPUT_KIND_KEY: REFERENCE_COMPOSITE,
    }
    (out_dir / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    report: dict[str, object] = {"out_dir": str(out_dir), "images": counts, "drifted_train": drifted, "seed": seed}
    log.info("wrote %s", report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="DeepPCB golden-reference dataset with drifted, seamlessly repaired training pairs"
    )
    ap.add_argument("src", type=Path, help="DeepPCB folder (with list.txt)")
    ap.add_argument("out", type=Path, help="output folder (replaced)")
    ap.add_argument("--good-copies", type=int, default=1)
    ap.add_argument("--defective-copies", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-clean", type=float, default=DriftSpec.p_clean)
    args = ap.parse_args(argv)
    try:
        report = write_drift_dataset(
            args.src,
            args.out,
            good_copies=args.good_copies,
            defective_copies=args.defective_copies,
            seed=args.seed,
            spec=DriftSpec(p_clean=args.p_clean),
        )
    except DatasetError as exc:
        print(f"error: {exc}")
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
