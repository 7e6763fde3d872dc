"""Letterbox geometry and preprocessing into the engine input, float and uint8 (edge.engines.letterbox)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from edge.engines.letterbox import Preprocessor, letterbox_geometry, padding_value
from edge.errors import CameraError

ToTensor = Callable[[np.ndarray], np.ndarray]

# (src_hw, dst_hw) -> (new_w, new_h), top, left, as printed by Ultralytics 8.4
# LetterBox(dst, auto=False, scaleup=True, center=True).get_params()
ULTRALYTICS_LETTERBOX = [
    ((480, 640), (320, 320), (320, 240), 40, 0),
    ((640, 640), (320, 320), (320, 320), 0, 0),
    ((1080, 1920), (384, 640), (640, 360), 12, 0),
    ((333, 517), (320, 320), (320, 206), 57, 0),
    ((100, 3000), (320, 320), (320, 11), 154, 0),
    ((701, 299), (256, 416), (109, 256), 0, 153),
    ((3, 5), (320, 320), (320, 192), 64, 0),
]


def ultralytics_params(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[tuple[int, int], int, int]:
    """Ultralytics' LetterBox.get_params maths, transcribed (center=True, auto=False)."""
    r = min(dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1])
    new_unpad = max(round(src_hw[1] * r), 1), max(round(src_hw[0] * r), 1)
    dw, dh = (dst_hw[1] - new_unpad[0]) / 2, (dst_hw[0] - new_unpad[1]) / 2
    return new_unpad, round(dh - 0.1), round(dw - 0.1)


def reference_letterbox(frame: np.ndarray, dst_hw: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Straightforward Ultralytics-style letterbox: resize, copyMakeBorder(114), RGB, CHW, /255."""
    (new_w, new_h), top, left = ultralytics_params(frame.shape[:2], dst_hw)
    img = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if channels == 1:
        img = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if img.shape[1] != new_w or img.shape[0] != new_h:
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    bottom, right = dst_hw[0] - new_h - top, dst_hw[1] - new_w - left
    value = (114,) * (3 if img.ndim == 3 else 1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value)
    if img.ndim == 2:
        return img[None].astype(np.float32) / 255.0
    return img[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0


def rng_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst", "new_wh", "top", "left"), ULTRALYTICS_LETTERBOX)
def test_geometry_matches_ultralytics(
    src: tuple[int, int], dst: tuple[int, int], new_wh: tuple[int, int], top: int, left: int
) -> None:
    g = letterbox_geometry(src, dst)
    assert g.new_hw == (new_wh[1], new_wh[0])
    assert (g.pad_top, g.pad_left) == (top, left)
    assert g.scale == pytest.approx(min(dst[0] / src[0], dst[1] / src[1]))
    assert ultralytics_params(src, dst) == (new_wh, top, left)


def test_geometry_round_trip_non_square() -> None:
    g = letterbox_geometry((480, 752), (256, 320))  # non-square source and input
    boxes = np.array([[10, 20, 110, 220], [0, 0, 752, 480], [700.5, 400.25, 751, 479]], np.float32)
    inp = g.to_input(boxes)
    assert inp[:, 1].min() >= g.pad_top - 1e-3
    assert inp[:, 3].max() <= g.pad_top + g.new_hw[0] + 1e-3
    back = g.to_source(inp.copy())
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_geometry_rejects_empty_sizes() -> None:
    with pytest.raises(ValueError):
        letterbox_geometry((0, 10), (320, 320))


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dst", "channels"),
    [
        ((333, 517, 3), (256, 416), 3),  # BGR, non-square source and input
        ((640, 640), (320, 320), 3),  # mono replicated to 3 channels
        ((480, 640), (320, 320), 1),  # mono into a 1-channel model
        ((480, 640, 3), (320, 320), 1),  # BGR into a 1-channel model (grey)
        ((320, 320, 3), (320, 320), 3),  # already the input size: no resize
        ((320, 320), (320, 320), 3),
        ((701, 299, 3), (256, 416), 3),  # pad left/right
        ((100, 120), (640, 640), 3),  # upscaling
    ],
)
def test_preprocessor_matches_reference(shape: tuple[int, ...], dst: tuple[int, int], channels: int) -> None:
    frame = rng_image(shape)
    batch = np.full((2, channels, *dst), -1.0, np.float32)
    pre = Preprocessor(batch[1])
    g = pre(frame)
    assert g == letterbox_geometry(shape[:2], dst)
    np.testing.assert_array_equal(batch[1], reference_letterbox(frame, dst, channels))  # bit-exact
    assert (batch[0] == -1.0).all()  # the other batch item is untouched


def test_preprocessor_float16_buffer() -> None:
    frame = rng_image((333, 517, 3), seed=3)
    buf = np.zeros((3, 256, 416), np.float16)
    Preprocessor(buf)(frame)
    np.testing.assert_allclose(buf.astype(np.float32), reference_letterbox(frame, (256, 416)), atol=1e-3)


def test_preprocessor_equals_ultralytics_letterbox_non_square() -> None:
    """Pixel values equal Ultralytics' LetterBox + `im /= 255` bit for bit on a non-square frame."""
    frame = rng_image((333, 517, 3), seed=0)
    buf = np.zeros((3, 256, 416), np.float32)
    g = Preprocessor(buf)(frame)
    assert (g.new_hw, g.pad_top, g.pad_left) == ((256, 397), 0, 9)
    ref = cv2.copyMakeBorder(
        cv2.resize(frame, (397, 256), interpolation=cv2.INTER_LINEAR),
        0,
        0,
        9,
        10,
        cv2.BORDER_CONSTANT,
        value=(114, 114, 114),
    )
    np.testing.assert_array_equal(buf, ref[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255))


def test_preprocessor_switches_sizes_and_repads() -> None:
    buf = np.zeros((3, 320, 320), np.float32)
    pre = Preprocessor(buf)
    wide, tall = rng_image((200, 640, 3), 1), rng_image((640, 200, 3), 2)
    for frame in (wide, tall, wide, tall):
        pre(frame)
        np.testing.assert_allclose(buf, reference_letterbox(frame, (320, 320)), atol=1e-6)


def test_resize_writes_into_dst() -> None:
    src = rng_image((480, 640, 3))
    dst = np.empty((240, 320, 3), np.uint8)
    out = cv2.resize(src, (320, 240), dst=dst, interpolation=cv2.INTER_LINEAR)
    assert out is dst or np.shares_memory(out, dst)
    mono_dst = np.empty((240, 320), np.uint8)
    out = cv2.resize(src[:, :, 0], (320, 240), dst=mono_dst, interpolation=cv2.INTER_LINEAR)
    assert out is mono_dst or np.shares_memory(out, mono_dst)


@pytest.mark.parametrize("shape", [(640, 640), (480, 752, 3), (320, 320, 3)])
@pytest.mark.parametrize(
    "buffer",
    [((3, 320, 320), np.float32), ((320, 320, 3), np.uint8)],
    ids=["float-tensor", "uint8-pixels"],
)
def test_preprocessor_allocates_nothing_in_steady_state(
    shape: tuple[int, ...], buffer: tuple[tuple[int, ...], type]
) -> None:
    frame = rng_image(shape)
    pre = Preprocessor(np.zeros(*buffer))
    for _ in range(5):
        pre(frame)
    tracemalloc.start()
    try:
        pre(frame)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            pre(frame)
        grown = tracemalloc.get_traced_memory()[0] - base
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert grown <= 512, f"preprocessing grew traced memory by {grown} bytes over 200 frames"
    assert peak < 64 * 1024, f"preprocessing allocated a {peak}-byte temporary"


def test_preprocessor_rejects_bad_frames_and_buffers() -> None:
    pre = Preprocessor(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(CameraError):
        pre(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(CameraError):
        pre(np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError):
        Preprocessor(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError):
        Preprocessor(np.zeros((3, 64, 64), np.uint8))


def test_rgb_frames_are_not_swapped() -> None:
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    a = np.zeros((3, 64, 64), np.float32)
    b = np.zeros((3, 64, 64), np.float32)
    Preprocessor(a)(bgr)
    Preprocessor(b)(rgb, "RGB")
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# uint8 pixel buffers (engines that convert inside their graph)
# --------------------------------------------------------------------------------------------


PIXEL_CASES = [
    ((333, 517, 3), (256, 416), 3, "BGR"),
    ((333, 517, 3), (256, 416), 3, "RGB"),  # colour camera delivering RGB
    ((640, 640), (320, 320), 3, "BGR"),  # mono replicated to 3 channels
    ((640, 640, 1), (320, 320), 3, "BGR"),
    ((480, 640), (320, 320), 1, "BGR"),  # mono into a 1-channel model
    ((480, 640, 3), (320, 320), 1, "BGR"),  # BGR into a 1-channel model (grey)
    ((320, 320, 3), (320, 320), 3, "BGR"),  # already the input size: no resize
    ((320, 320, 3), (320, 320), 3, "RGB"),
    ((320, 320), (320, 320), 3, "BGR"),
    ((320, 320), (320, 320), 1, "BGR"),
    ((701, 299, 3), (256, 416), 3, "BGR"),  # pad left/right
    ((100, 120), (640, 640), 3, "BGR"),  # upscaling
]


@pytest.mark.parametrize(("shape", "dst", "channels", "order"), PIXEL_CASES)
def test_pixel_buffer_gives_the_model_the_same_tensor(
    shape: tuple[int, ...], dst: tuple[int, int], channels: int, order: str, pixels_to_tensor: ToTensor
) -> None:
    """uint8 (H, W, C) BGR buffer, converted as the engine does, == the float path, bit for bit."""
    frame = rng_image(shape, seed=5)
    floats = np.zeros((channels, *dst), np.float32)
    pixels = np.zeros((2, *dst, channels), np.uint8)
    g_float = Preprocessor(floats)(frame, order)
    pre = Preprocessor(pixels[1])
    assert pre.writes_pixels and not Preprocessor(floats).writes_pixels
    g_pixels = pre(frame, order)
    assert g_pixels == g_float
    np.testing.assert_array_equal(pixels_to_tensor(pixels[1:2])[0], floats)
    assert (pixels[0] == 0).all()  # the other batch item is untouched


def test_pixel_buffer_pads_grey_and_repads_on_a_new_size(pixels_to_tensor: ToTensor) -> None:
    pixels = np.zeros((320, 320, 3), np.uint8)
    pre = Preprocessor(pixels)
    wide, tall = rng_image((200, 640, 3), 1), rng_image((640, 200, 3), 2)
    for frame in (wide, tall, wide):
        g = pre(frame)
        floats = np.zeros((3, 320, 320), np.float32)
        Preprocessor(floats)(frame)
        np.testing.assert_array_equal(pixels_to_tensor(pixels[None])[0], floats)
        assert (pixels[: g.pad_top] == 114).all() and (pixels[g.pad_top + g.new_hw[0] :] == 114).all()


def test_pixel_buffer_shapes_and_padding_values() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        Preprocessor(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="float32, float16 or uint8"):
        Preprocessor(np.zeros((3, 64, 64), np.int16))
    read_only = np.zeros((64, 64, 3), np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Preprocessor(read_only)
    assert padding_value(np.uint8) == 114
    assert padding_value(np.float32) == pytest.approx(114 / 255)
