"""Frame validity before inference: decode errors, geometry, blank/saturated frames, references."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cameras.base import Frame
from edge.frame_check import FrameCheck, invalid


def frame(
    array: np.ndarray, camera: str = "cam0", error: str | None = None, reference: np.ndarray | None = None
) -> Frame:
    return Frame(array=array, frame_id=0, part_id="p", camera=camera, captured_ns=0, error=error, reference=reference)


def board(h: int = 640, w: int = 640, channels: int = 0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def test_a_textured_frame_passes_and_sets_the_geometry() -> None:
    fc = FrameCheck()
    assert fc.check(frame(board())) is None
    assert fc.geometry("cam0") == (640, 640)
    assert fc.check(frame(board(600, 660, 3))) is None  # near the geometry: fine


def test_a_camera_error_is_the_reason() -> None:
    fc = FrameCheck()
    assert fc.check(frame(np.empty((0, 0), np.uint8), error="truncated JPEG")) == "invalid_frame: truncated JPEG"
    already = invalid("cannot decode a.png")
    assert fc.check(frame(np.empty((0, 0), np.uint8), error=already)) == already


def test_a_tiny_frame_is_invalid_against_the_declared_geometry() -> None:
    fc = FrameCheck({"cam0": (640, 640)})
    assert fc.check(frame(board(10, 10))) == "invalid_frame: 10x10 px, expected 640x640"
    assert fc.check(frame(board(200, 640))) == "invalid_frame: 640x200 px, expected 640x640"
    assert fc.check(frame(board(640, 640), camera="other")) is None  # another camera learns its own


def test_first_seen_geometry_and_tiny_frame_without_one() -> None:
    fc = FrameCheck()
    assert fc.check(frame(board(10, 10))) == "invalid_frame: 10x10 px, under 16 px"
    assert fc.geometry("cam0") is None  # an invalid frame does not set the geometry
    assert fc.check(frame(board(480, 640))) is None
    assert fc.check(frame(board(2000, 2000))) == "invalid_frame: 2000x2000 px, expected 640x480"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "invalid_frame: blank (mean 0.0, std 0.0)"),
        (255, "invalid_frame: saturated (mean 255.0, std 0.0)"),
        (128, "invalid_frame: blank (mean 128.0, std 0.0)"),
    ],
)
def test_uniform_frames_are_invalid(value: int, reason: str) -> None:
    fc = FrameCheck()
    assert fc.check(frame(np.full((640, 640), value, np.uint8))) == reason
    assert fc.check(frame(np.full((640, 640, 3), value, np.uint8))) == reason


def test_a_dark_but_textured_frame_passes() -> None:
    a = (board() // 32).astype(np.uint8)  # values 0..7: dim, not blank
    assert FrameCheck().check(frame(a)) is None


def test_non_contiguous_colour_view_and_small_frames() -> None:
    rgba = board(100, 120, 4)
    assert FrameCheck().check(frame(rgba[:, :, :3])) is None
    assert FrameCheck().check(frame(board(20, 20, 1))) is None  # HxWx1 is mono


def test_wrong_dtype_or_shape() -> None:
    fc = FrameCheck()
    assert fc.check(frame(np.zeros((64, 64), np.float32))) == "invalid_frame: pixels of type float32, expected uint8"
    assert fc.check(frame(np.zeros((64,), np.uint8))) == "invalid_frame: array of shape (64,), expected HxW or HxWx3"


def test_reference_of_another_size_is_invalid() -> None:
    ref = board(320, 320)
    assert FrameCheck().check(frame(board(), reference=ref)) == (
        "invalid_frame: 640x640 px, its golden reference is 320x320"
    )
    assert FrameCheck().check(frame(board(), reference=board(640, 640, seed=1))) is None


def test_check_allocates_nothing_per_frame() -> None:
    fc = FrameCheck()
    frames = [frame(board(640, 640, 3, seed=1)), frame(board(640, 640, seed=2)), frame(np.zeros((640, 640), np.uint8))]
    for f in frames:
        fc.check(f)
    tracemalloc.start()
    try:
        for f in frames:
            fc.check(f)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            for f in frames[:2]:
                fc.check(f)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown <= 1024, grown
    assert fc.checked == 3 + 3 + 600
