"""The golden-reference composite (edge.reference): channels, no allocation, clear errors."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from edge.errors import CameraError
from edge.reference import COARSE_MIN_SIDE, ReferenceAligner, compose


def test_channels_are_part_reference_difference() -> None:
    rng = np.random.default_rng(0)
    part = rng.integers(0, 256, (24, 40), dtype=np.uint8)
    ref = rng.integers(0, 256, (24, 40), dtype=np.uint8)
    out = compose(part, ref)
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], part)
    np.testing.assert_array_equal(out[..., 1], ref)
    np.testing.assert_array_equal(out[..., 2], np.abs(part.astype(np.int16) - ref).astype(np.uint8))
    # a colour frame (or reference) counts by its first channel
    colour = np.dstack([part, np.zeros_like(part), np.full_like(part, 9)])
    np.testing.assert_array_equal(compose(colour, ref), out)


def test_given_buffers_are_filled_in_place_without_allocating() -> None:
    part = np.full((64, 48), 200, np.uint8)
    ref = np.full((64, 48), 50, np.uint8)
    out = np.zeros((64, 48, 3), np.uint8)
    scratch = np.zeros((64, 48), np.uint8)
    assert compose(part, ref, out, scratch) is out
    assert out[0, 0].tolist() == [200, 50, 150]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            compose(part, ref, out, scratch)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown <= 512


def test_errors_name_what_is_wrong() -> None:
    grey = np.zeros((8, 8), np.uint8)
    with pytest.raises(CameraError, match=r"part image \(8, 8\) and reference \(9, 8\)"):
        compose(grey, np.zeros((8, 9), np.uint8))
    with pytest.raises(CameraError, match="reference image: expected uint8"):
        compose(grey, np.zeros((8, 8), np.float32))
    with pytest.raises(CameraError, match="part image: expected a"):
        compose(np.zeros((2, 8, 8, 1), np.uint8), grey)
    with pytest.raises(ValueError, match="out must be"):
        compose(grey, grey, np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="scratch must be"):
        compose(grey, grey, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8))


def board(seed: int = 0, hw: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A binary, board-like texture: random 8 px blocks of copper (255) and substrate (0)."""
    blocks = np.random.default_rng(seed).integers(0, 2, (hw[0] // 8, hw[1] // 8)).astype(np.uint8) * 255
    return np.kron(blocks, np.ones((8, 8), np.uint8))


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[::-1], flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize(("dx", "dy"), [(0, 0), (1, 0), (0, -1), (3, -2), (-5, 4), (6, 6)])
def test_aligner_moves_the_reference_onto_the_part(dx: int, dy: int) -> None:
    ref = board()
    part = shifted(ref, dx, dy)
    aligner = ReferenceAligner(max_shift_px=6)
    moved = aligner.align(part, ref)
    assert aligner.last_shift == (dx, dy)
    np.testing.assert_array_equal(moved, part)  # the uncovered edge repeats the border, as the part's
    assert not compose(part, moved)[..., 2].any()


@pytest.mark.parametrize(("dx", "dy"), [(0, 0), (1, 0), (0, -1), (3, -2), (-5, 4), (7, -8), (8, 8), (-1, 7)])
def test_aligner_on_large_images_proposes_at_half_resolution_and_still_lands_exactly(dx: int, dy: int) -> None:
    ref = board(seed=3, hw=(320, 336))  # shorter side >= COARSE_MIN_SIDE: the coarse path
    assert min(ref.shape) >= COARSE_MIN_SIDE
    part = shifted(ref, dx, dy)
    aligner = ReferenceAligner(max_shift_px=8)
    moved = aligner.align(part, ref)
    assert aligner.last_shift == (dx, dy)
    np.testing.assert_array_equal(moved, part)
    assert ReferenceAligner(max_shift_px=4).estimate(shifted(ref, 9, 0), ref) == (0, 0)  # beyond max


def test_aligner_leaves_shifts_it_cannot_trust() -> None:
    ref = board()
    aligner = ReferenceAligner(max_shift_px=4)
    assert aligner.align(shifted(ref, 7, 0), ref) is ref and aligner.last_shift == (0, 0)  # beyond max
    noise = np.random.default_rng(9).integers(0, 256, ref.shape, dtype=np.uint8)
    assert ReferenceAligner(4, min_response=0.5).estimate(noise, ref) == (0, 0)  # no clear peak
    with pytest.raises(CameraError, match="differ in size"):
        aligner.align(ref[:, :64], ref)
    with pytest.raises(ValueError, match="at least 1"):
        ReferenceAligner(0)


@pytest.mark.parametrize("hw", [(96, 128), (288, 320)])
def test_aligner_allocates_no_arrays_in_steady_state(hw: tuple[int, int]) -> None:
    ref = board(hw=hw)
    parts = [shifted(ref, 2, 1), shifted(ref, -1, 3)]
    aligner = ReferenceAligner(max_shift_px=6)
    for part in parts:
        aligner.align(part, ref)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            for part in parts:
                aligner.align(part, ref)
        grown = tracemalloc.get_traced_memory()[0] - base
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert grown <= 512 and peak < ref.nbytes  # not even one image-sized array per call


# --------------------------------------------------------------------------- difference evidence


def _trace_board(h: int = 80, w: int = 120) -> np.ndarray:
    """A binarised board: two horizontal traces 8 px wide and a pad."""
    board = np.zeros((h, w), np.uint8)
    board[20:28, :] = 255
    board[50:58, :] = 255
    board[30:40, 60:70] = 255
    return board


def test_difference_evidence_counts_a_real_defect_and_forgives_misregistration() -> None:
    from edge.reference import DifferenceEvidence, difference_pixels

    ref = _trace_board()
    part = ref.copy()
    part[20:28, 40:44] = 0  # an open: 4 px of the trace gone (32 px)
    box = np.array([[36.0, 16.0, 48.0, 32.0]])
    # the trace's edge rows are forgiven (the reference has background 1 px away): 6 rows x 4 px
    assert difference_pixels(part, ref, box).tolist() == [24]
    assert difference_pixels(part, ref, box, tolerance_px=0).tolist() == [32]
    elsewhere = np.array([[0.0, 45.0, 30.0, 62.0]])
    assert difference_pixels(part, ref, elsewhere).tolist() == [0]
    # a part a pixel off its reference lights up every edge, but no pixel is unexplained with tolerance 1
    shifted = np.roll(ref, 1, axis=0)
    whole = np.array([[0.0, 0.0, 120.0, 80.0]])
    assert difference_pixels(shifted, ref, whole, tolerance_px=0)[0] > 200
    assert difference_pixels(shifted, ref, whole, tolerance_px=1).tolist() == [0]
    # a line's gain and noise stay below the level
    rng = np.random.default_rng(0)
    drifted = np.clip(ref.astype(np.float32) * 0.92 + rng.normal(0, 3, ref.shape), 0, 255).astype(np.uint8)
    assert difference_pixels(drifted, ref, whole).tolist() == [0]
    # boxes are clipped to the frame; an empty one counts nothing; `out` is filled in place
    scorer = DifferenceEvidence(tolerance_px=1, level=48, margin_px=2)
    out = np.full(3, -1, np.int64)
    boxes = np.array([[36.0, 16.0, 48.0, 32.0], [-20.0, -20.0, -5.0, -5.0], [110.0, 10.0, 500.0, 90.0]])
    assert scorer.count(part, ref, boxes, out) is out
    assert out.tolist() == [24, 0, 0]


def test_difference_evidence_reads_composite_channels_without_growing() -> None:
    from edge.reference import DifferenceEvidence

    ref = _trace_board()
    part = ref.copy()
    part[52:55, 90:93] = 0  # a pin hole: 9 px
    composite = compose(part, ref)
    scorer = DifferenceEvidence()
    box = np.array([[85.0, 48.0, 98.0, 60.0]])
    assert scorer.count(composite[..., 0], composite[..., 1], box).tolist() == [9]
    out = np.zeros(1, np.int64)
    tracemalloc.start()
    try:
        scorer.count(composite[..., 0], composite[..., 1], box, out)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            scorer.count(composite[..., 0], composite[..., 1], box, out)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown <= 4096


def test_difference_evidence_rejects_bad_settings_and_sizes() -> None:
    from edge.reference import DifferenceEvidence

    with pytest.raises(ValueError, match="level"):
        DifferenceEvidence(level=0)
    with pytest.raises(ValueError, match="tolerance_px"):
        DifferenceEvidence(tolerance_px=-1)
    with pytest.raises(CameraError, match="differ in size"):
        DifferenceEvidence().count(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="out must have shape"):
        DifferenceEvidence().count(
            np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((2, 4)), np.zeros(1, np.int64)
        )
