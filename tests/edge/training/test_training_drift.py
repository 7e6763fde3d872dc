"""Training pairs like a line's captures (edge.training.drift): seamless repairs, drift, the dataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.engines.model import INPUT_KIND_KEY, REFERENCE_COMPOSITE
from edge.errors import DatasetError
from edge.reference import is_reference_composite
from edge.training.drift import (
    Drift,
    DriftSpec,
    apply_drift,
    feathered_repair,
    sample_drift,
    shift_image,
    write_drift_dataset,
)


def board() -> np.ndarray:
    b = np.zeros((64, 64), np.uint8)
    b[20:30, :] = 255
    b[40:44, 10:50] = 255
    return b


def test_feathered_repair_removes_the_defect_and_keeps_the_rest_of_the_capture() -> None:
    ref = board()
    part = ref.copy()
    part[20:30, 30:34] = 0  # an open inside the box
    part[22, 12] = 230  # the capture's own small deviation inside the box: below the level, kept
    part[5, 5] = 90  # outside every box: kept
    before = part.copy()
    feathered_repair(part, ref, [(8, 16, 40, 34)])
    assert np.array_equal(part[20:30, 30:34], ref[20:30, 30:34])  # the defect is the reference's now
    assert part[22, 12] == 230 and part[5, 5] == 90
    changed = np.argwhere(part != before)
    assert changed[:, 1].min() >= 8 - 2 and changed[:, 1].max() < 40 + 2  # within the box grown by grow_px
    # seamless: no hard rectangle of the reference, the difference left is the capture's own
    assert int(np.count_nonzero(cv2.absdiff(part, ref)[16:34, 8:40] > 48)) == 0
    with pytest.raises(ValueError, match="one size"):
        feathered_repair(part, ref[:10], [(0, 0, 4, 4)])


def test_drift_moves_the_reference_and_degrades_the_part() -> None:
    ref = board()
    part = ref.copy()
    rng = np.random.default_rng(0)
    p2, r2 = apply_drift(part, ref, Drift(dx=1.0, dy=-2.0, gain=1.0, noise_sigma=0.0), rng)
    assert np.array_equal(p2, part)
    assert np.array_equal(r2[3:-3, 3:-3], np.roll(np.roll(ref, 1, axis=1), -2, axis=0)[3:-3, 3:-3])
    assert np.array_equal(ref, board())  # inputs untouched
    p3, _ = apply_drift(part, ref, Drift(gain=0.9, noise_sigma=3.0, blur_sigma=0.5), rng)
    assert 200 < float(p3[24, 30]) < 245 and p3.dtype == np.uint8
    half = shift_image(ref, 0.5, 0.0)
    assert 0 < int(half[25, 0]) <= 255 and half[25, 0] == 255 and 100 < int(shift_image(ref, 0.0, 0.5)[20, 5]) < 160
    assert sample_drift(rng, DriftSpec(p_clean=1.0)).none
    for _ in range(50):
        d = sample_drift(rng, DriftSpec(p_clean=0.0))
        assert abs(d.dx) <= 2 and abs(d.dy) <= 2 and 0.9 <= d.gain <= 1.1 and 0 <= d.noise_sigma <= 4


def read(path: Path) -> np.ndarray:
    im = cv2.imread(str(path))
    assert im is not None, path
    return im


def make_deeppcb(root: Path) -> Path:
    """Two groups of one pair each: a defective board (an open) and its template."""
    lines = []
    for group, n in (("group10000", "10000000"), ("group20000", "20000000")):
        gid = group.removeprefix("group")
        (root / "images" / group / gid).mkdir(parents=True)
        (root / "annotations" / group / f"{gid}_not").mkdir(parents=True)
        temp = np.zeros((640, 640), np.uint8)
        temp[100:120, :] = 255
        test = temp.copy()
        test[100:120, 300:310] = 0
        cv2.imwrite(str(root / "images" / group / gid / f"{n}_test.jpg"), test)
        cv2.imwrite(str(root / "images" / group / gid / f"{n}_temp.jpg"), temp)
        (root / "annotations" / group / f"{gid}_not" / f"{n}.txt").write_text("295 95 315 125 1\n")
        lines.append(f"{group}/{gid}/{n}.jpg {group}/{gid}_not/{n}.txt")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def test_drift_dataset_trains_on_drifted_pairs_and_validates_as_convert_does(tmp_path: Path) -> None:
    src = make_deeppcb(tmp_path / "src")
    out = tmp_path / "out"
    report = write_drift_dataset(src, out, val_groups=["group20000"], good_copies=2, seed=3)
    assert report["images"] == {"train": 3, "val": 2}
    train = sorted(p.stem for p in (out / "images" / "train").glob("*.png"))
    assert train == ["group10000_10000000_good", "group10000_10000000_good-d1", "group10000_10000000_test"]
    labels = {p.stem: p.read_text() for p in (out / "labels" / "train").glob("*.txt")}
    assert labels["group10000_10000000_good"] == "" and labels["group10000_10000000_test"].startswith("0 ")
    for p in (out / "images" / "train").glob("*.png"):
        im = read(p)
        assert im.shape == (640, 640, 3)
        if is_reference_composite(im):
            # R is |B - G|: the composite the service builds
            assert np.array_equal(im[..., 2], cv2.absdiff(im[..., 0], im[..., 1]))
    good = read(out / "images" / "val" / "group20000_20000000_good.png")
    assert int(good[..., 2].max()) < 48  # repaired, not drifted: no difference left
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert doc[INPUT_KIND_KEY] == REFERENCE_COMPOSITE and doc["val"] == "images/val"
    # the same seed writes the same training images
    again = write_drift_dataset(src, tmp_path / "again", val_groups=["group20000"], good_copies=2, seed=3)
    assert again["drifted_train"] == report["drifted_train"]
    a = read(out / "images" / "train" / "group10000_10000000_test.png")
    b = read(tmp_path / "again" / "images" / "train" / "group10000_10000000_test.png")
    assert np.array_equal(a, b)
    with pytest.raises(DatasetError, match="at least 1"):
        write_drift_dataset(src, out, good_copies=0)
