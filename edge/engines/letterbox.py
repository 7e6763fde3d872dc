"""Letterbox: where a camera frame goes in the network input, and writing it there in place.

Pure numpy/OpenCV, no I/O, the same for every runtime. The maths follows Ultralytics
(`LetterBox(auto=False, scaleup=True, center=True)`) so that detections agree with
`YOLO(model).predict(...)` on the same model and image.

An engine's input buffer comes in one of two forms, and `Preprocessor` fills either:
- float (C, H, W), what the model itself takes: RGB order, scaled to [0, 1];
- uint8 (H, W, C), camera pixels: BGR order, 0..255, for an engine that does the conversion
  to float, the channel swap and the layout change inside its own graph (`fuse_preprocess`):
  a quarter of the bytes cross into the runtime, and no float pass runs in Python. Both give
  the model the same numbers.

Hot-path rule: `Preprocessor.__call__` allocates nothing in steady state (geometry, padding
and resize scratch are prepared once per source size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.errors import CameraError

# Frame sizes for which buffers are kept (letterbox plans, composite and alignment buffers):
# a camera that changes its size now and then cannot grow them without bound.
MAX_FRAME_SIZES = 8

PAD_VALUE = 114  # Ultralytics letterbox grey
_255 = np.float32(255.0)  # divide, not multiply by 1/255: bit-identical to Ultralytics


def padding_value(dtype: np.dtype | type) -> float:
    """The letterbox grey in a buffer of `dtype`: 114 for uint8 pixels, 114/255 for floats."""
    if np.dtype(dtype) == np.uint8:
        return PAD_VALUE
    return float(np.float32(PAD_VALUE) / _255)


# --------------------------------------------------------------------------------------------
# Letterbox geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LetterboxGeometry:
    """How a source image was placed into the network input.

    `scale` is min(dst/src); the image is resized to `new_hw` (each side rounded like
    Ultralytics) and placed at (`pad_top`, `pad_left`) in the `dst_hw` input, the rest grey.
    """

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    scale: float
    new_hw: tuple[int, int]
    pad_top: int
    pad_left: int
    # per-column (x, y, x, y) constants of `to_source`, made once per geometry, not per frame
    _offset: np.ndarray = field(init=False, repr=False, compare=False)
    _gain: np.ndarray = field(init=False, repr=False, compare=False)
    _limit: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (
            ("_offset", (self.pad_left, self.pad_top) * 2),
            ("_gain", (self.gain_x, self.gain_y) * 2),
            ("_limit", (self.src_hw[1], self.src_hw[0]) * 2),
        ):
            array = np.array(value, np.float32)
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @property
    def gain_x(self) -> float:
        """Effective horizontal scale after rounding (new_w / src_w), as Ultralytics uses it."""
        return self.new_hw[1] / self.src_hw[1]

    @property
    def gain_y(self) -> float:
        return self.new_hw[0] / self.src_hw[0]

    @property
    def needs_resize(self) -> bool:
        return self.new_hw != self.src_hw

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) xyxy in source pixels -> input pixels (a new float32 array)."""
        out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
        out[:, 0::2] *= np.float32(self.gain_x)
        out[:, 1::2] *= np.float32(self.gain_y)
        out[:, 0::2] += np.float32(self.pad_left)
        out[:, 1::2] += np.float32(self.pad_top)
        return out

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) xyxy in input pixels -> source pixels, clipped to the source image.

        Works in place when `boxes` is a writable float32 array (and returns it).
        """
        out = boxes if boxes.dtype == np.float32 and boxes.flags.writeable else boxes.astype(np.float32)
        out = out.reshape(-1, 4)
        # One pass per step over the (n, 4) array with per-column constants (x, y, x, y).
        out -= self._offset
        out /= self._gain
        np.maximum(out, np.float32(0), out=out)
        np.minimum(out, self._limit, out=out)
        return out


def letterbox_geometry(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> LetterboxGeometry:
    """Ultralytics `LetterBox(new_shape=dst_hw, auto=False, scaleup=True, center=True)` maths.

    Python's `round` (half to even) is used on purpose: it is what Ultralytics does.
    """
    sh, sw = int(src_hw[0]), int(src_hw[1])
    dh_, dw_ = int(dst_hw[0]), int(dst_hw[1])
    if sh <= 0 or sw <= 0 or dh_ <= 0 or dw_ <= 0:
        raise ValueError(f"letterbox needs positive sizes, got src {src_hw} dst {dst_hw}")
    r = min(dh_ / sh, dw_ / sw)
    new_w, new_h = max(round(sw * r), 1), max(round(sh * r), 1)
    dw, dh = (dw_ - new_w) / 2, (dh_ - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    return LetterboxGeometry((sh, sw), (dh_, dw_), r, (new_h, new_w), int(top), int(left))


# --------------------------------------------------------------------------------------------
# Preprocessing into the engine's input tensor
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """Everything prepared once for one source frame shape."""

    geometry: LetterboxGeometry
    mono: bool  # source frame is single-channel
    scratch: np.ndarray | None  # resized uint8 image (new_h, new_w[, 3]) or None (no resize)
    gray: np.ndarray | None  # BGR -> grey scratch (source size) for 1-channel models
    # float buffer: per model channel, the image region; uint8 buffer: the one (h, w[, 3]) region
    views: tuple[np.ndarray, ...]
    planes: list[np.ndarray] | None = None  # colour frames: contiguous uint8 planes (split once)


def _resize_into(src: np.ndarray, size_wh: tuple[int, int], dst: np.ndarray) -> None:
    out = cv2.resize(src, size_wh, dst=dst, interpolation=cv2.INTER_LINEAR)
    if out is not dst:  # pragma: no cover - OpenCV did not honour dst
        np.copyto(dst, out.reshape(dst.shape))


class Preprocessor:
    """Letterboxes camera frames into one batch item of an engine's input, in place.

    `buffer` is one batch item of the engine's input: a float32/float16 (C, H, W) tensor (filled
    with RGB scaled to [0, 1]) or a uint8 (H, W, C) pixel buffer (filled with BGR 0..255, the
    engine converts). Frames are HxW (mono) or HxWx3 (BGR, or RGB where the camera says so)
    uint8. Mono frames are replicated into 3 channels, or go straight in for a 1-channel model;
    colour frames into a 1-channel model are turned grey first, as Ultralytics loads them.
    Not thread-safe: one per batch item per worker.
    """

    def __init__(self, buffer: np.ndarray, *, pad_value: int = PAD_VALUE, max_sizes: int = MAX_FRAME_SIZES) -> None:
        if buffer.dtype == np.uint8:
            if buffer.ndim != 3 or buffer.shape[2] not in (1, 3):
                raise ValueError(f"a uint8 input buffer must be (H, W, C) with C 1 or 3, got {buffer.shape}")
            self._pixels = True
            self._channels = int(buffer.shape[2])
            self._hw = (int(buffer.shape[0]), int(buffer.shape[1]))
            self._pad: float = float(pad_value)
        elif buffer.dtype in (np.float32, np.float16):
            if buffer.ndim != 3 or buffer.shape[0] not in (1, 3):
                raise ValueError(f"a float input buffer must be (C, H, W) with C 1 or 3, got {buffer.shape}")
            self._pixels = False
            self._channels = int(buffer.shape[0])
            self._hw = (int(buffer.shape[1]), int(buffer.shape[2]))
            self._pad = float(np.float32(pad_value) / _255)
        else:
            raise ValueError(f"input buffer must be float32, float16 or uint8, got {buffer.dtype}")
        if not buffer.flags.writeable:
            raise ValueError("input buffer is read-only")
        self._buf = buffer
        self._max_sizes = max(1, max_sizes)
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._active: _Plan | None = None

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._hw

    @property
    def writes_pixels(self) -> bool:
        """True where the buffer takes uint8 BGR pixels (the engine converts them)."""
        return self._pixels

    def reset(self) -> None:
        """Forget which padding is in the buffer (call if something else wrote into it)."""
        self._active = None

    def geometry_for(self, frame_shape: tuple[int, ...]) -> LetterboxGeometry:
        return self._plan_for(frame_shape).geometry

    def __call__(self, frame: np.ndarray, channel_order: str = "BGR") -> LetterboxGeometry:
        """Write `frame` into the buffer; `channel_order` says what a colour frame's last axis is."""
        if frame.dtype != np.uint8:
            raise CameraError(f"frames must be uint8, got {frame.dtype}")
        plan = self._plans.get(frame.shape)
        if plan is None:
            plan = self._plan_for(frame.shape)
        if plan is not self._active:
            self._buf.fill(self._pad)  # padding is written once per source size
            self._active = plan
        src = frame[:, :, 0] if frame.ndim == 3 and plan.mono else frame
        if plan.gray is not None:  # BGR into a 1-channel model: grey first, as Ultralytics loads it
            code = cv2.COLOR_RGB2GRAY if channel_order == "RGB" else cv2.COLOR_BGR2GRAY
            cv2.cvtColor(src, code, dst=plan.gray)
            src = plan.gray
        if self._pixels:
            self._write_pixels(plan, src, channel_order == "RGB")
        else:
            self._write_floats(plan, src, channel_order == "RGB")
        return plan.geometry

    def _write_pixels(self, plan: _Plan, src: np.ndarray, rgb: bool) -> None:
        """uint8 buffer: resize straight into its image region; only a channel change needs scratch."""
        g = plan.geometry
        size_wh = (g.new_hw[1], g.new_hw[0])
        (region,) = plan.views
        if (src.ndim == 3 and not rgb) or (src.ndim == 2 and self._channels == 1):  # same channels
            if plan.scratch is not None:
                _resize_into(src, size_wh, region)
            else:
                np.copyto(region, src)
            return
        if plan.scratch is not None:
            _resize_into(src, size_wh, plan.scratch)
            src = plan.scratch
        code = cv2.COLOR_GRAY2BGR if src.ndim == 2 else cv2.COLOR_RGB2BGR
        out = cv2.cvtColor(src, code, dst=region)
        if out is not region:  # pragma: no cover - OpenCV did not honour dst
            np.copyto(region, out)

    def _write_floats(self, plan: _Plan, src: np.ndarray, rgb: bool) -> None:
        if plan.scratch is not None:
            g = plan.geometry
            _resize_into(src, (g.new_hw[1], g.new_hw[0]), plan.scratch)
            src = plan.scratch
        views = plan.views
        if src.ndim == 2:
            np.divide(src, _255, out=views[0], casting="unsafe")
            for v in views[1:]:
                np.copyto(v, views[0])
            return
        # The model takes RGB: from BGR, model channel c reads source channel 2 - c.
        # Splitting into contiguous planes first halves the cost of the strided reads.
        # (A non-contiguous camera view is read strided: OpenCV would copy it.)
        if src.flags.c_contiguous:
            planes = plan.planes
            if planes is None or planes[0].shape != src.shape[:2]:
                planes = plan.planes = [np.empty(src.shape[:2], np.uint8) for _ in range(3)]
            cv2.split(src, planes)
            channels: Sequence[np.ndarray] = planes
        else:
            channels = [src[:, :, c] for c in range(3)]
        for c in range(3):
            np.divide(channels[c if rgb else 2 - c], _255, out=views[c], casting="unsafe")

    def _plan_for(self, shape: tuple[int, ...]) -> _Plan:
        plan = self._plans.get(shape)
        if plan is not None:
            return plan
        if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
            mono = True
        elif len(shape) == 3 and shape[2] == 3:
            mono = False
        else:
            raise CameraError(f"frames must be HxW mono or HxWx3 BGR, got shape {shape}")
        g = letterbox_geometry((shape[0], shape[1]), self._hw)
        nh, nw = g.new_hw
        gray = np.empty((shape[0], shape[1]), np.uint8) if (not mono and self._channels == 1) else None
        scratch = None
        if g.needs_resize:
            scratch = np.empty((nh, nw) if (mono or gray is not None) else (nh, nw, 3), np.uint8)
        region = (slice(g.pad_top, g.pad_top + nh), slice(g.pad_left, g.pad_left + nw))
        views: tuple[np.ndarray, ...]
        if self._pixels:
            view = self._buf[region]
            views = (view[:, :, 0] if self._channels == 1 else view,)
        else:
            views = tuple(self._buf[c][region] for c in range(self._channels))
        plan = _Plan(g, mono, scratch, gray, views)
        if len(self._plans) >= self._max_sizes:
            oldest = next(iter(self._plans))
            if self._plans[oldest] is self._active:
                self._active = None
            del self._plans[oldest]
        self._plans[shape] = plan
        return plan
