"""What the OpenCV and replay cameras share: frames lent on their own buffers, released exactly once.

A `PooledCamera` numbers the frames it hands out, lends each under a token (`HeldFrames`), gives
a `BufferPool` buffer back on the first `release()` of its frame, and tears down in `close()`.
A subclass opens its source, reads under `_io_lock` while its session is current, builds frames
with `_make` / `_error` and releases its source in `_close_source`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from cameras.base import Frame, GroundTruth
from cameras.buffers import BufferPool, HeldFrames


def rewind(cap: cv2.VideoCapture, reopen: Callable[[], cv2.VideoCapture]) -> cv2.VideoCapture:
    """A video file's capture at its first frame again; one that cannot seek is reopened."""
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    if cap.get(cv2.CAP_PROP_POS_FRAMES) != 0:
        cap.release()
        return reopen()
    return cap


class PooledCamera:
    """Frame numbering, release and close bookkeeping for a camera that owns its frame buffers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: BufferPool | None = None
        self._held = HeldFrames()
        self._empty = np.empty((0, 0), np.uint8)
        self._empty.flags.writeable = False
        self._io_lock = threading.Lock()
        self._closing = threading.Event()
        self._session = 0
        self._connected = False
        self._next_token = 0
        self._frame_id = 0
        self.frames_delivered = 0
        self.frames_error = 0
        self.frames_dropped = 0
        self.last_error: str | None = None

    # -- close -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading; repeatable. A read running in another thread is waited for (bounded);
        frames still held stay readable, and releasing them is a counted no-op."""
        self._closing.set()
        if self._pool is not None:
            self._pool.close()
        got = self._io_lock.acquire(timeout=10.0)
        try:
            self._session += 1
            self._close_source(got)
            self._pool = None
            self._held.drain()
            self._connected = False
        finally:
            if got:
                self._io_lock.release()

    def _close_source(self, got_lock: bool) -> None:
        """Let go of what `open()` took; `got_lock` False: a read is still running in another thread."""
        raise NotImplementedError

    # -- frames ----------------------------------------------------------------------------
    def _make(
        self,
        array: np.ndarray,
        part: str,
        truth: GroundTruth | None,
        index: int | None,
        reference: np.ndarray | None = None,
    ) -> Frame:
        """A delivered frame on `array`; `index` is its pool buffer (None: not a pool buffer)."""
        frame = self._new_frame(array, part, truth, index, None)
        frame.reference = reference
        self.frames_delivered += 1
        return frame

    def _error(self, part: str, reason: str, truth: GroundTruth | None, invalid: bool = False) -> Frame:
        """An error frame (empty array, decided FAILSAFE) for a part that could not be delivered;
        `invalid`: the part's image itself is unusable (FAILSAFE invalid_frame, not camera_error)."""
        self.last_error = reason
        frame = self._new_frame(self._empty, part, truth, None, reason)
        frame.invalid = invalid
        self.frames_error += 1
        return frame

    def _new_frame(
        self, array: np.ndarray, part: str, truth: GroundTruth | None, index: int | None, error: str | None
    ) -> Frame:
        """The next frame number, held under a fresh token until its release."""
        token = self._next_token
        self._next_token += 1
        self._held.add(token, index)
        frame = Frame(
            array=array,
            frame_id=self._frame_id,
            part_id=part,
            camera=self.name,
            captured_ns=time.monotonic_ns(),
            handle=token,
            truth=truth,
            error=error,
        )
        self._frame_id += 1
        return frame

    # -- release / health ------------------------------------------------------------------
    def release(self, frame: Frame) -> None:
        first, index = self._held.pop(frame.handle)
        if first and index is not None:
            pool = self._pool
            if pool is not None:
                pool.give_back(index)

    def _frame_counts(self) -> dict[str, Any]:
        return {
            "frames_delivered": self.frames_delivered,
            "frames_incomplete": self.frames_error,
            "frames_dropped": self.frames_dropped,
        }

    def _release_counts(self) -> dict[str, Any]:
        return {
            "held": len(self._held),
            "double_releases": self._held.double_releases,
            "late_releases": self._held.late_releases,
        }
