"""Replay camera: a folder of images (or one image, or a video file) played as a production line.

Images are decoded once, at `open()`, into a cache that frames are read-only views of (several
frames in flight may share one image; nothing is allocated per frame). A set larger than
`max_cache_mb` is decoded frame by frame into a fixed pool of preallocated buffers instead; a
pool buffer is reused only after the pipeline released the frame in it. A video file is played
by the OpenCV camera (`cameras.opencv`, one implementation of video files) under this camera's
pacing, part ids and `max_frames`.

An item that cannot be read (missing or unreadable file, undecodable or truncated image --
checked strictly, see `cameras.image_file` --, a missing or undecodable reference) is not an
outage: it becomes an error frame naming the file and the problem (decided FAILSAFE with that
cause), counted in `decode_errors`, and the line goes on, in both modes.

Pacing is `rate_ppm` parts per minute on an absolute schedule (frame i is due at t0 + i*period,
so sleeps do not accumulate drift); 0 is unpaced: frames come as fast as they can be read,
which overruns the ring (each frame that gives way decided FAILSAFE `ring_overflow`) unless `max_in_flight`
paces the line by the pipeline (the next frame only when fewer are held): trigger-when-ready.

Ground truth comes from YOLO txt labels or DeepPCB annotations (see `cameras.labels`), so a
replayed run can report accuracy. Pointing `path` at a DeepPCB root (with `list.txt`) replays
each board under test with its annotation and its defect-free template as a good part.

The source vanishing is a lost camera: `open()` raises `CameraLostError` when it is missing
(so the pipeline keeps reconnecting) and `frames()` raises it when the source disappears
while playing (checked every `check_source_every_s`). A source that exists but can never play
(no image, none decodable, bad labels, a references path that is no folder, a file that is no
video) is permanent: `CameraFatalError`, the camera stops with that message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from cameras import labels as lbl
from cameras.base import CameraConfigBase, Frame, resolve_path
from cameras.buffers import BufferPool, HeldFrames
from cameras.image_file import read_image
from cameras.opencv import OpenCVCamera, OpenCVCameraConfig
from cameras.pooled_camera import PooledCamera
from cameras.replay_items import (
    ReplayItem,
    attach_deeppcb_labels,
    attach_references,
    attach_yolo_labels,
    detect_label_format,
    reference_for,
    scan_items,
)
from edge.errors import CameraError, CameraFatalError, CameraLostError, CameraSourceError, DatasetError

# BufferPool, HeldFrames and resolve_path lived here first: still importable from this module.
__all__ = [
    "VIDEO_SUFFIXES",
    "BufferPool",
    "HeldFrames",
    "ReplayCamera",
    "ReplayCameraConfig",
    "reference_for",
    "resolve_path",
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES: frozenset[str] = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


class ReplayCameraConfig(CameraConfigBase):
    """Replay images or a video as a camera."""

    type: Literal["replay"] = "replay"
    path: str = Field(..., description="Image folder, one image, a video file, or a DeepPCB root (has list.txt).")
    recursive: bool = Field(default=False, description="Also take images from sub-folders (sorted by relative path).")
    rate_ppm: float = Field(
        default=60.0,
        ge=0,
        description="Parts per minute; 0 = unpaced: as fast as frames can be read (overruns the ring "
        "and is decided FAILSAFE ring_overflow unless max_in_flight paces it by the pipeline).",
    )
    loop: bool = Field(default=True, description="Start over at the end of the set.")
    max_frames: int | None = Field(default=None, ge=1, description="Stop after this many frames (over all loops).")
    grayscale: bool | None = Field(
        default=None, description="True: decode mono HxW; False: BGR HxWx3; None: keep each file's own channels."
    )
    labels: Literal["none", "yolo", "deeppcb", "auto"] = Field(
        default="auto", description="Ground truth format; auto: DeepPCB root/annotations, else YOLO txt if any exist."
    )
    labels_dir: str | None = Field(
        default=None, description="Folder of label files (default: found beside the images)."
    )
    references: str | None = Field(
        default=None,
        description="For a golden-reference model: folder of defect-free reference images, aligned "
        "with the replayed images; an image's reference is the file of its stem, else of the longest "
        "'_'-cut prefix of it (board7_0042_test -> board7_0042 -> board7), any image type.",
    )
    class_names: list[str] | None = Field(
        default=None, description="Class names; label classes must be below their count (DeepPCB: its 6 types)."
    )
    deeppcb_images: Literal["both", "test", "template"] = Field(
        default="both", description="DeepPCB root: replay boards under test, their templates (good parts), or both."
    )
    mode: Literal["auto", "cached", "pool"] = Field(
        default="auto", description="cached: decode all at open; pool: decode per frame; auto: cached if it fits."
    )
    max_cache_mb: int = Field(default=1024, ge=1, description="Largest decoded image set kept in memory.")
    pool_size: int = Field(
        default=8, ge=1, description="Pool mode: preallocated frame buffers; must exceed the ring slots to never stall."
    )
    pool_wait_s: float = Field(
        default=1.0,
        gt=0,
        description="Pool mode, paced: wait this long for a free buffer, then deliver an error frame.",
    )
    check_source_every_s: float = Field(default=1.0, gt=0, description="How often to check the source still exists.")
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Trigger-when-ready pacing: wait while this many frames are held by the pipeline "
        "(with rate_ppm 0 the line runs exactly as fast as it is judged; for benchmarks).",
    )

    def build(self, base_dir: Path) -> ReplayCamera:
        return ReplayCamera(self, Path(base_dir))


class ReplayCamera(PooledCamera):
    """A `Camera` replaying images or a video (see the module docstring)."""

    def __init__(self, config: ReplayCameraConfig, base_dir: Path) -> None:
        super().__init__(config.name)
        self.config = config
        self.path = resolve_path(base_dir, config.path)
        self.labels_dir = resolve_path(base_dir, config.labels_dir) if config.labels_dir else None
        self.references_dir = resolve_path(base_dir, config.references) if config.references else None
        self.class_names: list[str] | None = list(config.class_names) if config.class_names else None
        self.period_s = 60.0 / config.rate_ppm if config.rate_ppm > 0 else 0.0
        self.label_format: str = "none"
        self.mode: str = "closed"
        self._items: list[ReplayItem] = []
        self._cache: dict[tuple[str, int, int, int], np.ndarray] = {}  # (path, mtime, size, flag) -> image
        self._images: list[np.ndarray | None] = []  # cached mode: one per item (None: the item is bad)
        self._size = (0, 0)  # (width, height) of the first decodable image: the set's geometry
        self._video: OpenCVCamera | None = None  # video mode: the OpenCV camera playing the file
        self._video_session = -1
        self._room = threading.Condition()  # signalled on release, for max_in_flight pacing
        # stream position, kept over close/open so a reconnect continues the line
        self._pos = 0
        self._loop_index = 0
        # counters (frames delivered / in error / dropped: PooledCamera)
        self.decode_errors = 0  # items that could not be read or decoded (each an error frame)
        self.behind_schedule = 0

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() not in lbl.IMAGE_SUFFIXES and not self.path.is_dir()

    # -- open ------------------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        self._closing.clear()
        if not self.path.exists():
            raise CameraLostError(f"replay source {self.path} does not exist")
        try:
            if self.path.is_file() and self.is_video:
                if self.references_dir is not None:
                    raise CameraFatalError(f"replay {self.name}: references pair with images by name, not video frames")
                self._open_video()
            else:
                self._open_images()
        except DatasetError as exc:
            raise CameraFatalError(f"replay {self.name}: {exc}") from exc
        except OSError as exc:  # the folder went away while it was being read
            if not self.path.exists():
                raise CameraLostError(f"replay source {self.path} vanished while opening") from exc
            raise CameraError(f"replay {self.name}: cannot read {self.path}: {exc}") from exc
        self._session += 1
        self._connected = True
        log.info(
            "replay %s: %d %s from %s (%s mode, labels %s, %.1f ppm)",
            self.name, len(self._items), "images" if self._video is None else "video", self.path,
            self.mode, self.label_format, self.config.rate_ppm,
        )  # fmt: skip

    def _imread_flag(self) -> int:
        if self.config.grayscale is True:
            return cv2.IMREAD_GRAYSCALE
        if self.config.grayscale is False:
            return cv2.IMREAD_COLOR
        return cv2.IMREAD_ANYCOLOR  # 8-bit, the file's own channel count (mono stays HxW)

    def _attach_labels(self, items: list[ReplayItem]) -> None:
        kind = self.config.labels
        if kind == "none" or not items:
            self.label_format = "none"
            return
        if self.labels_dir is not None and not self.labels_dir.is_dir():
            raise DatasetError(f"labels_dir {self.labels_dir} is not a folder")
        if self.label_format == "deeppcb-root":
            kind = "deeppcb"
        root = self.path if self.path.is_dir() else self.path.parent
        if kind == "auto":
            kind = detect_label_format(items, root, self.labels_dir)
        if kind == "deeppcb":
            names = self.class_names or list(lbl.DEEPPCB_CLASS_NAMES)
            self.class_names = names
            attach_deeppcb_labels(items, self.labels_dir, names)
        elif kind == "yolo":
            attach_yolo_labels(items, root, self.labels_dir, self.class_names)
        self.label_format = kind if self.label_format != "deeppcb-root" else "deeppcb-root"

    def _decode(self, item: ReplayItem) -> np.ndarray | str:
        """The item's image, strictly decoded, or what is wrong with it (counted, logged)."""
        try:
            return read_image(item.path, self._imread_flag())
        except CameraSourceError as exc:
            self.decode_errors += 1
            log.warning("replay %s: %s; decided FAILSAFE", self.name, exc)
            return str(exc)

    def _open_images(self) -> None:
        self.label_format = "none"
        c = self.config
        items, deeppcb_root = scan_items(
            self.path, recursive=c.recursive, labels=c.labels, deeppcb_images=c.deeppcb_images
        )
        if deeppcb_root:
            self.label_format = "deeppcb-root"
        if not items:
            raise CameraFatalError(
                f"replay {self.name}: no images ({', '.join(sorted(lbl.IMAGE_SUFFIXES))}) in {self.path}"
            )
        self._attach_labels(items)
        if self.references_dir is not None:
            self._attach_references(items)
        limit = self.config.max_cache_mb * 1024 * 1024
        mode = self.config.mode
        first: np.ndarray | None = None
        first_item = items[0]
        for it in items:  # the first decodable image sizes the set; the bad ones before it stay bad
            got = self._decode(it)
            if isinstance(got, str):
                it.problem = it.problem or got
                continue
            first, first_item = got, it
            break
        if first is None:
            raise CameraFatalError(
                f"replay {self.name}: none of the {len(items)} images in {self.path} can be read "
                f"(first: {items[0].problem})"
            )
        self._size = (int(first.shape[1]), int(first.shape[0]))
        if mode == "auto":
            mode = "cached" if first.nbytes * len(items) <= limit else "pool"
        elif mode == "cached" and first.nbytes * len(items) > limit:
            raise CameraFatalError(
                f"replay {self.name}: {len(items)} images of {first.nbytes / 2**20:.1f} MB would need "
                f"~{first.nbytes * len(items) / 2**20:.0f} MB, over max_cache_mb={self.config.max_cache_mb}; "
                "raise max_cache_mb or use mode: pool"
            )
        self._items = items
        if mode == "cached":
            if not self._fill_cache(items, first, first_item, limit):
                if self.config.mode == "cached":
                    raise CameraFatalError(
                        f"replay {self.name}: decoded images exceed max_cache_mb={self.config.max_cache_mb}; "
                        "raise it or use mode: pool"
                    )
                mode = "pool"
        if mode == "pool":
            self._images = []
            self._pool = BufferPool(self.config.pool_size, first.nbytes)
        self.mode = mode

    def _attach_references(self, items: list[ReplayItem]) -> None:
        """Every item's golden reference; an item without a readable one gets a `problem`."""
        assert self.references_dir is not None
        if not self.references_dir.is_dir():
            raise CameraFatalError(f"replay {self.name}: references {self.references_dir} is not a folder")
        for problem in attach_references(items, self.references_dir):
            self.decode_errors += 1
            log.warning("replay %s: %s; its parts are decided FAILSAFE", self.name, problem)

    def _fill_cache(self, items: list[ReplayItem], first: np.ndarray, first_item: ReplayItem, limit: int) -> bool:
        """Decode every image once (reusing unchanged ones from an earlier open). False: too big.
        An item that cannot be read keeps None and its `problem` (an error frame each time)."""
        flag = self._imread_flag()
        old, cache = self._cache, {}
        images: list[np.ndarray | None] = []
        total = 0
        for it in items:
            if it.problem is not None:  # no usable reference, or it failed to decode already
                images.append(None)
                continue
            try:
                st = it.path.stat()
            except OSError as exc:
                it.problem = f"cannot read {it.path}: {exc.strerror or exc}"
                self.decode_errors += 1
                images.append(None)
                continue
            key = (str(it.path), st.st_mtime_ns, st.st_size, flag)
            img: np.ndarray | str | None = first if it is first_item else old.get(key)
            if img is None:
                img = self._decode(it)
            if isinstance(img, str):
                it.problem = img
                images.append(None)
                continue
            total += img.nbytes
            if total > limit:
                self._cache = {}
                return False
            img.flags.writeable = False
            cache[key] = img
            images.append(img)
            it.truth_for(img.shape[1], img.shape[0])
        self._cache, self._images = cache, images
        return True

    def _open_video(self) -> None:
        cam = self._video
        if cam is None:  # one OpenCV camera for this replay camera's life: frame ids never repeat
            c = self.config
            cfg = OpenCVCameraConfig(
                name=c.name,
                source=str(self.path),
                grayscale=c.grayscale is True,
                loop=c.loop,
                realtime=False,  # paced here, by rate_ppm
                pool_size=c.pool_size,
                pool_wait_s=c.pool_wait_s,
            )
            cam = OpenCVCamera(cfg, self.path.parent)
            cam.pool_wait_s = c.pool_wait_s if self.period_s else None
            cam.resume_position = True
            cam.file_part_ids = True
            self._video = cam
        try:
            cam.open()
        except CameraError as exc:
            if not self.path.exists():
                raise CameraLostError(f"replay source {self.path} does not exist") from exc
            raise
        self._video_session = cam._session
        self._items = []
        self.label_format = "none"
        self.mode = "pool"

    # -- close -----------------------------------------------------------------------------
    def _close_source(self, got_lock: bool) -> None:
        if self._video is not None:
            self._video.close()
        self._images = []
        if self.mode != "closed":
            self.mode = "closed"

    # -- frames ----------------------------------------------------------------------------
    def _counts(self) -> tuple[int, int, int]:
        """(delivered, error, dropped): this camera's, plus its video player's."""
        v = self._video
        extra = (v.frames_delivered, v.frames_error, v.frames_dropped) if v is not None else (0, 0, 0)
        return self.frames_delivered + extra[0], self.frames_error + extra[1], self.frames_dropped + extra[2]

    def _held_count(self) -> int:
        return len(self._held) + (len(self._video._held) if self._video is not None else 0)

    def frames(self) -> Generator[Frame, None, None]:
        session = self._session
        if not self._connected:
            raise CameraError(f"replay {self.name}: frames() before open()")
        if not self.path.exists():
            raise CameraLostError(f"replay source {self.path} vanished")
        period = self.period_s
        t0 = time.monotonic()
        emitted = 0
        next_check = t0 + self.config.check_source_every_s
        max_frames = self.config.max_frames
        while session == self._session and not self._closing.is_set():
            if max_frames is not None:
                delivered, errors, _ = self._counts()
                if delivered + errors >= max_frames:
                    return
            if self._video is None and self._pos >= len(self._items):
                if not self.config.loop:
                    return
                self._pos = 0
                self._loop_index += 1
            if period:
                due = t0 + emitted * period
                now = time.monotonic()
                if due > now:
                    if self._closing.wait(due - now):
                        return
                elif now - due > period:
                    self.behind_schedule += 1
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.config.check_source_every_s
                if not os.path.exists(self.path):
                    self.last_error = f"source {self.path} vanished"
                    raise CameraLostError(f"replay source {self.path} vanished")
            limit = self.config.max_in_flight
            if limit is not None:
                with self._room:
                    while self._held_count() >= limit and not self._closing.is_set():
                        self._room.wait(0.05)
            frame = self._next_frame(session)
            if frame is None:
                return
            emitted += 1
            yield frame

    def _next_frame(self, session: int) -> Frame | None:
        """The next frame (or an error frame); None when the source ended or the camera closed."""
        video = self._video
        if video is not None:
            if session != self._session:
                return None
            frame = video._read(self._video_session)
            if frame is not None:
                self.last_error = video.last_error
            return frame
        with self._io_lock:
            if session != self._session:
                return None
            item = self._items[self._pos]
            part = item.part if self._loop_index == 0 else f"{item.part}#{self._loop_index}"
            self._pos += 1
            if self.mode == "cached":
                cached = self._images[self._pos - 1]
                if cached is None:
                    problem = item.problem or f"cannot read {item.path}"
                    return self._error(part, problem, item.truth_for(*self._size), invalid=True)
                truth = item.truth_for(cached.shape[1], cached.shape[0])
                return self._make(cached.view(), part, truth, None, item.reference)
            if item.problem is not None:  # found at open: no usable reference, or undecodable then
                return self._error(part, item.problem, item.truth_for(*self._size), invalid=True)
            pool = self._pool
            assert pool is not None
            index = pool.acquire(self.config.pool_wait_s if self.period_s else None)
            if index is None:
                if self._closing.is_set():
                    return None
                self.frames_dropped += 1
                return self._error(part, f"no free replay buffer (all {pool.size} held)", item.truth)
            img = self._decode(item)
            if isinstance(img, str):
                pool.give_back(index)
                if not os.path.exists(self.path):
                    raise CameraLostError(f"replay source {self.path} vanished")
                return self._error(part, img, item.truth_for(*self._size), invalid=True)
            buf = pool.view(index, img.shape)
            np.copyto(buf, img)
            view = buf.view()
            view.flags.writeable = False
            return self._make(view, part, item.truth_for(img.shape[1], img.shape[0]), index, item.reference)

    # -- release / health ------------------------------------------------------------------
    def release(self, frame: Frame) -> None:
        if self._video is not None:
            self._video.release(frame)
        else:
            super().release(frame)
        if self.config.max_in_flight is not None:
            with self._room:
                self._room.notify()

    def health(self) -> dict[str, Any]:
        cache_bytes = sum(a.nbytes for a in self._images if a is not None)
        delivered, errors, dropped = self._counts()
        video = self._video
        held = video._held if video is not None else self._held
        pool = video._pool if video is not None else self._pool
        return {
            "type": "replay",
            "connected": self._connected,
            "source": str(self.path),
            "mode": self.mode,
            "labels": self.label_format,
            "items": len(self._items),
            "position": self._pos if video is None else video._pos,
            "loops": self._loop_index if video is None else video._loops,
            "frames_delivered": delivered,
            "frames_incomplete": errors,
            "frames_dropped": dropped,
            "decode_errors": self.decode_errors,
            "behind_schedule": self.behind_schedule,
            "held": len(held),
            "double_releases": held.double_releases,
            "late_releases": held.late_releases,
            "cache_mb": round(cache_bytes / 2**20, 1),
            "pool_free": pool.free if pool is not None else None,
            "last_error": self.last_error,
        }
