"""OpenCV camera: a USB/V4L2 device index, an RTSP/HTTP stream or a video file via `cv2.VideoCapture`.

Frames are read straight into a fixed pool of preallocated buffers (`cap.read(image=buf)`
decodes in place), and a buffer is reused only after the pipeline released the frame in it.
When every buffer is held the camera waits up to `pool_wait_s` and then delivers an error
frame (the part gets a FAILSAFE verdict) for the image it had to skip.

A failed read on a live source (device index, URL) is a lost camera (`CameraLostError`; the
pipeline reconnects). A file ends the iterator at its end, or starts over with `loop: true`;
it plays at its own frame rate like a camera (`realtime: false`: as fast as it decodes). A file
that exists but is no video OpenCV can decode, or has no frames, is permanent
(`CameraFatalError`: reconnecting will not help). This is also the replay camera's video mode
(`cameras.replay` drives an `OpenCVCamera` with its own pacing and part ids).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from cameras.base import CameraConfigBase, Frame, resolve_path
from cameras.buffers import BufferPool
from cameras.pooled_camera import PooledCamera, rewind
from edge.errors import CameraError, CameraFatalError, CameraLostError

log = logging.getLogger(__name__)


def _backend_id(name: str) -> int:
    value = getattr(cv2, f"CAP_{name.upper()}", None)
    if not isinstance(value, int):
        raise ValueError(f"unknown OpenCV capture backend {name!r} (e.g. V4L2, FFMPEG, GSTREAMER, DSHOW, MSMF, ANY)")
    return value


class OpenCVCameraConfig(CameraConfigBase):
    """A `cv2.VideoCapture` source."""

    type: Literal["opencv"] = "opencv"
    source: int | str = Field(..., description="Device index (0), stream URL (rtsp://...) or video file path.")
    width: int | None = Field(default=None, ge=1, description="Requested frame width (CAP_PROP_FRAME_WIDTH).")
    height: int | None = Field(default=None, ge=1, description="Requested frame height (CAP_PROP_FRAME_HEIGHT).")
    fps: float | None = Field(default=None, gt=0, description="Requested frame rate (CAP_PROP_FPS).")
    fourcc: str | None = Field(
        default=None, min_length=4, max_length=4, description="Requested codec, e.g. MJPG for USB."
    )
    backend: str | None = Field(default=None, description="Capture backend: V4L2, FFMPEG, GSTREAMER, DSHOW, MSMF, ANY.")
    grayscale: bool = Field(default=False, description="Deliver mono HxW instead of BGR HxWx3.")
    loop: bool = Field(default=False, description="Video file: start over at its end.")
    realtime: bool = Field(
        default=True, description="Video file: deliver at its own frame rate (or `fps`) like a camera; false: at once."
    )
    pool_size: int = Field(default=8, ge=1, description="Preallocated frame buffers; must exceed the ring slots.")
    pool_wait_s: float = Field(default=1.0, gt=0, description="Wait this long for a free buffer, then skip the image.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str | None) -> str | None:
        if v is not None:
            _backend_id(v)
        return v

    def build(self, base_dir: Path) -> OpenCVCamera:
        return OpenCVCamera(self, Path(base_dir))


class OpenCVCamera(PooledCamera):
    """A `Camera` over `cv2.VideoCapture` (see the module docstring)."""

    def __init__(self, config: OpenCVCameraConfig, base_dir: Path) -> None:
        super().__init__(config.name)
        self.config = config
        src = config.source
        self.is_file = isinstance(src, str) and "://" not in src and not src.isdigit()
        if isinstance(src, str) and src.isdigit():
            src = int(src)
        if self.is_file:
            assert isinstance(src, str)
            src = str(resolve_path(base_dir, src))
        self.source: int | str = src
        self._cap: cv2.VideoCapture | None = None
        self._shape: tuple[int, ...] = ()
        self._scratch: np.ndarray | None = None
        self._probe: np.ndarray | None = None
        self._pos = 0  # frames read from a file in this pass (a reopen starts the file over)
        self._loops = 0
        # hooks for the replay camera's video mode: wait for a buffer this long (None: until one
        # is free), continue a file where it stopped on reopen, name parts after the file
        self.pool_wait_s: float | None = config.pool_wait_s
        self.resume_position = False
        self.file_part_ids = False

    def _describe(self) -> str:
        return f"opencv camera {self.name} ({self.source})"

    def open(self) -> None:
        self.close()
        self._closing.clear()
        if self.is_file and not os.path.exists(str(self.source)):
            raise CameraLostError(f"{self._describe()}: file does not exist")
        cap = self._create_capture()
        if not cap.isOpened():
            cap.release()
            if self.is_file and os.path.exists(str(self.source)):
                raise CameraFatalError(f"{self._describe()}: cannot open the file (not a video OpenCV can decode?)")
            raise CameraLostError(f"{self._describe()}: cannot open")
        c = self.config
        if c.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*c.fourcc))
        if c.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
        if c.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
        if c.fps:
            cap.set(cv2.CAP_PROP_FPS, c.fps)
        resume = self._pos if (self.is_file and self.resume_position) else 0
        if resume:
            cap.set(cv2.CAP_PROP_POS_FRAMES, resume)  # a reconnect continues where it stopped
        # One probe read learns the real frame size (requests are only requests); its image
        # becomes the first frame, copied into the pool.
        ok, probe = cap.read()
        if not ok or probe is None:
            cap.release()
            if not self.is_file:
                raise CameraLostError(f"{self._describe()}: no frame from the device")
            if not os.path.exists(str(self.source)):
                raise CameraLostError(f"{self._describe()}: file vanished")
            if resume:  # the file got shorter: start it over
                self._pos = 0
                cap.release()
                return self.open()
            raise CameraFatalError(f"{self._describe()}: the file has no frames")
        h, w = probe.shape[:2]
        self._probe = probe
        self._shape = (h, w) if c.grayscale else (h, w, 3)
        self._scratch = np.empty((h, w, 3), np.uint8) if c.grayscale else None
        self._pool = BufferPool(c.pool_size, int(np.prod(self._shape)))
        self._cap = cap
        self._pos = resume
        self._session += 1
        self._connected = True
        log.info("opencv %s: opened %s (%s), %dx%d", self.name, self.source, cap.getBackendName(), w, h)

    def _create_capture(self) -> cv2.VideoCapture:
        api = _backend_id(self.config.backend) if self.config.backend else cv2.CAP_ANY
        return cv2.VideoCapture(self.source, api)

    def _close_source(self, got_lock: bool) -> None:
        if self._cap is not None:
            if got_lock:
                self._cap.release()
            else:  # a read is still blocked: leave the capture to the garbage collector
                log.warning("opencv %s: close() while a read is blocked; not releasing it now", self.name)
            self._cap = None
        self._probe = None

    def frames(self) -> Generator[Frame, None, None]:
        session = self._session
        if not self._connected:
            raise CameraError(f"{self._describe()}: frames() before open()")
        period = self._file_period()
        t0 = time.monotonic()
        emitted = 0
        while session == self._session and not self._closing.is_set():
            if period:  # a file played like a camera: frame i at t0 + i * period, no drift
                wait = t0 + emitted * period - time.monotonic()
                if wait > 0 and self._closing.wait(wait):
                    return
            frame = self._read(session)
            if frame is None:
                return
            emitted += 1
            yield frame

    def _file_period(self) -> float:
        if not (self.is_file and self.config.realtime):
            return 0.0
        fps = self.config.fps
        if fps is None and self._cap is not None:
            fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return 1.0 / fps if fps and 0 < fps < 1000 else 0.0

    def _read(self, session: int) -> Frame | None:
        with self._io_lock:
            if session != self._session:
                return None
            cap, pool = self._cap, self._pool
            assert cap is not None and pool is not None
            index = pool.acquire(self.pool_wait_s)
            if index is None:
                if self._closing.is_set():
                    return None
                cap.grab()  # the image the camera has now is lost: no buffer to put it in
                self._pos += 1
                self.frames_dropped += 1
                return self._error(self._part_id(), f"no free frame buffer (all {pool.size} held)", None)
            buf = pool.view(index, self._shape)
            while True:
                ok = self._read_into(cap, buf)
                if ok:
                    self._pos += 1
                    view = buf.view()
                    view.flags.writeable = False
                    return self._make(view, self._part_id(), None, index)
                if not self.is_file:
                    pool.give_back(index)
                    self.last_error = "read failed"
                    raise CameraLostError(f"{self._describe()}: read failed")
                if not os.path.exists(str(self.source)):
                    pool.give_back(index)
                    raise CameraLostError(f"{self._describe()}: file vanished")
                if not self.config.loop or self._pos == 0:
                    pool.give_back(index)
                    return None
                cap = self._cap = rewind(cap, self._create_capture)
                self._pos = 0
                self._loops += 1

    def _read_into(self, cap: cv2.VideoCapture, buf: np.ndarray) -> bool:
        probe, self._probe = self._probe, None
        if probe is not None:
            src: np.ndarray | None = probe
            ok = True
        elif self._scratch is not None:
            ok, src = cap.read(image=self._scratch)
        else:
            ok, src = cap.read(image=buf)
            if ok and src is not None and np.shares_memory(src, buf):
                return True
        if not ok or src is None:
            return False
        if src.shape[:2] != buf.shape[:2]:
            raise CameraError(f"{self._describe()}: frame size changed from {buf.shape[:2]} to {src.shape[:2]}")
        if self.config.grayscale:
            if src.ndim == 2:
                np.copyto(buf, src)
            else:
                cv2.cvtColor(src, cv2.COLOR_BGR2GRAY, dst=buf)
        elif src.ndim == 2:
            cv2.cvtColor(src, cv2.COLOR_GRAY2BGR, dst=buf)
        else:
            np.copyto(buf, src)
        return True

    def _part_id(self) -> str:
        if self.file_part_ids:  # <file stem>-<position in the file>[#<loop>] (called after the read)
            part = f"{Path(str(self.source)).stem}-{self._pos - 1}"
            return part if self._loops == 0 else f"{part}#{self._loops}"
        return f"{self.name}-{self._frame_id}"

    def health(self) -> dict[str, Any]:
        return {
            "type": "opencv",
            "connected": self._connected,
            "source": str(self.source),
            "shape": list(self._shape),
            "loops": self._loops,
            **self._frame_counts(),
            **self._release_counts(),
            "pool_free": self._pool.free if self._pool is not None else None,
            "last_error": self.last_error,
        }
