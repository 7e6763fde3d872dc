"""Frame validity: can this frame be trusted enough to judge? Checked before inference.

A frame the service cannot trust must be decided FAILSAFE with its cause, never PASS: a file
the camera could not decode whole (`Frame.error`), an image far from the camera's geometry
(a 10x10 stub where 640x640 boards arrive), a blank or saturated image (lens cap, lamp out,
a decoder's grey fill), or a frame whose golden reference has another size.

`FrameCheck.check(frame)` returns None for a frame to judge, else the reason, e.g.
``invalid_frame: truncated JPEG``, ``invalid_frame: 10x10 px, expected 640x640``,
``invalid_frame: blank (mean 0.0, std 0.0)``. Per camera it remembers the expected geometry:
the one declared (`expected={"cam0": (640, 640)}`, height x width) or else the first frame it
accepted. Pure and cheap: the statistics are taken on a strided sample of at most
`SAMPLE_SIDE`^2 pixels copied into one preallocated float64 buffer, so no
memory is allocated per frame (beyond numpy's scalars). Thread use: one checker per judging
thread (the buffers are reused).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cameras.base import Frame

PREFIX = "invalid_frame"
SAMPLE_SIDE = 32  # the sample grid is at most SAMPLE_SIDE x SAMPLE_SIDE pixels


def invalid(detail: str) -> str:
    """The reason string for an invalid frame: ``invalid_frame: <detail>``."""
    return f"{PREFIX}: {detail}"


class FrameCheck:
    """Per-camera frame validity (see the module docstring).

    `max_size_ratio`: a frame is far from the expected geometry when either side is more than
    this factor smaller or larger. `min_side_px`: smaller frames are never judged. `min_std`:
    a frame whose sampled standard deviation (0..255 scale) is at most this is uniform: blank,
    or saturated when its mean is at least `saturated_mean`. `first_seen`: learn a camera's
    geometry from its first accepted frame when none was declared.
    """

    def __init__(
        self,
        expected: Mapping[str, tuple[int, int]] | None = None,
        *,
        max_size_ratio: float = 2.0,
        min_side_px: int = 16,
        min_std: float = 1.0,
        saturated_mean: float = 250.0,
        first_seen: bool = True,
        check_uniform: bool = True,
    ) -> None:
        if max_size_ratio < 1.0:
            raise ValueError(f"max_size_ratio must be >= 1 (got {max_size_ratio})")
        self.expected: dict[str, tuple[int, int]] = {k: (int(v[0]), int(v[1])) for k, v in (expected or {}).items()}
        self.max_size_ratio = float(max_size_ratio)
        self.min_side_px = int(min_side_px)
        self.min_std = float(min_std)
        self.saturated_mean = float(saturated_mean)
        self.first_seen = first_seen
        self.check_uniform = check_uniform
        # sample buffers by channel count (1 or 3): preallocated once, reused for every frame
        self._sample = np.empty(SAMPLE_SIDE * SAMPLE_SIDE * 3, np.float64)
        self.checked = 0
        self.rejected = 0

    def geometry(self, camera: str) -> tuple[int, int] | None:
        """The (height, width) this camera's frames are expected to have, if known yet."""
        return self.expected.get(camera)

    def check(self, frame: Frame) -> str | None:
        """None when the frame can be judged, else ``invalid_frame: <why>``."""
        self.checked += 1
        why = self._why(frame)
        if why is not None:
            self.rejected += 1
            return why if why.startswith(PREFIX) else invalid(why)
        if self.first_seen and frame.camera not in self.expected:
            self.expected[frame.camera] = (int(frame.array.shape[0]), int(frame.array.shape[1]))
        return None

    def _why(self, frame: Frame) -> str | None:
        if frame.error is not None:
            return frame.error
        a = frame.array
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)):
            return f"array of shape {tuple(a.shape)}, expected HxW or HxWx3"
        if a.dtype != np.uint8:
            return f"pixels of type {a.dtype}, expected uint8"
        h, w = int(a.shape[0]), int(a.shape[1])
        want = self.expected.get(frame.camera)
        if h < self.min_side_px or w < self.min_side_px:
            return f"{w}x{h} px" + (f", expected {want[1]}x{want[0]}" if want else f", under {self.min_side_px} px")
        if want is not None and self._far(h, w, want):
            return f"{w}x{h} px, expected {want[1]}x{want[0]}"
        ref = frame.reference
        if ref is not None and (int(ref.shape[0]), int(ref.shape[1])) != (h, w):
            return f"{w}x{h} px, its golden reference is {ref.shape[1]}x{ref.shape[0]}"
        if self.check_uniform:
            return self._uniform(a, h, w)
        return None

    def _far(self, h: int, w: int, want: tuple[int, int]) -> bool:
        r = self.max_size_ratio
        return not (want[0] / r <= h <= want[0] * r and want[1] / r <= w <= want[1] * r)

    def _uniform(self, a: np.ndarray, h: int, w: int) -> str | None:
        sy = max(1, h // SAMPLE_SIDE)
        sx = max(1, w // SAMPLE_SIDE)
        view = a[: sy * SAMPLE_SIDE : sy, : sx * SAMPLE_SIDE : sx]  # strided view, no copy
        if view.ndim == 3 and view.shape[2] == 1:
            view = view[:, :, 0]
        n = view.size
        buf = self._sample[:n].reshape(view.shape)  # a contiguous prefix of the preallocated sample
        np.copyto(buf, view)  # uint8 -> float64, at most SAMPLE_SIDE^2 x 3 values
        mean = float(buf.sum()) / n
        sq = float(np.vdot(buf, buf)) / n
        std = max(0.0, sq - mean * mean) ** 0.5
        if std > self.min_std:
            return None
        kind = "saturated" if mean >= self.saturated_mean else "blank"
        return f"{kind} (mean {mean:.1f}, std {std:.1f})"
