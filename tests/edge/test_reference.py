"""The golden-reference composite (edge.reference): channels, no allocation, clear errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edge.errors import CameraError
from edge.reference import compose


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
