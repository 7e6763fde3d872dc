"""Replay camera: a folder of images (or one image, or a video file) played as a production line.

Images are decoded once, at `open()`, into a cache that frames are read-only views of (several
frames in flight may share one image; nothing is allocated per frame). A set larger than
`max_cache_mb`, and every video, is decoded frame by frame into a fixed pool of preallocated
buffers instead; a pool buffer is reused only after the pipeline released the frame in it.

Pacing is `rate_ppm` parts per minute on an absolute schedule (frame i is due at t0 + i*period,
so sleeps do not accumulate drift); 0 runs free, as fast as the consumer takes frames.

Ground truth comes from YOLO txt labels or DeepPCB annotations (see `cameras.labels`), so a
replayed run can report accuracy. Pointing `path` at a DeepPCB root (with `list.txt`) replays
each board under test with its annotation and its defect-free template as a good part.

The source vanishing is a lost camera: `open()` raises `CameraLostError` when it is missing
(so the pipeline keeps reconnecting) and `frames()` raises it when the source disappears
while playing (checked every `check_source_every_s`). A source that exists but holds no image
is a configuration error (`CameraError`).
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
from cameras.pooled_camera import PooledCamera, rewind
from cameras.replay_items import (
    ReplayItem,
    attach_deeppcb_labels,
    attach_yolo_labels,
    detect_label_format,
    scan_items,
)
from edge.errors import CameraError, CameraLostError, DatasetError

# BufferPool, HeldFrames and resolve_path lived here first: still importable from this module.
__all__ = ["VIDEO_SUFFIXES", "BufferPool", "HeldFrames", "ReplayCamera", "ReplayCameraConfig", "resolve_path"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES: frozenset[str] = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


class ReplayCameraConfig(CameraConfigBase):
    """Replay images or a video as a camera."""

    type: Literal["replay"] = "replay"
    path: str = Field(..., description="Image folder, one image, a video file, or a DeepPCB root (has list.txt).")
    recursive: bool = Field(default=False, description="Also take images from sub-folders (sorted by relative path).")
    rate_ppm: float = Field(default=60.0, ge=0, description="Parts per minute; 0 = as fast as the pipeline takes them.")
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


def reference_for(stem: str, by_stem: dict[str, Path]) -> Path | None:
    """The reference of an image: the file of the same stem, else of the longest prefix of the
    stem that ends before an '_' ("board7_0042_test" -> "board7_0042", then "board7")."""
    while True:
        found = by_stem.get(stem)
        if found is not None:
            return found
        cut = stem.rfind("_")
        if cut <= 0:
            return None
        stem = stem[:cut]


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
        self._images: list[np.ndarray] = []  # cached mode: one per item
        self._video: cv2.VideoCapture | None = None
        self._video_shape: tuple[int, ...] = ()
        self._scratch: np.ndarray | None = None
        self._room = threading.Condition()  # signalled on release, for max_in_flight pacing
        # stream position, kept over close/open so a reconnect continues the line
        self._pos = 0
        self._loop_index = 0
        # counters (frames delivered / in error / dropped: PooledCamera)
        self.decode_errors = 0
        self.behind_schedule = 0

    # -- open ------------------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        self._closing.clear()
        if not self.path.exists():
            raise CameraLostError(f"replay source {self.path} does not exist")
        try:
            if self.path.is_file() and self.path.suffix.lower() not in lbl.IMAGE_SUFFIXES:
                if self.references_dir is not None:
                    raise CameraError(f"replay {self.name}: references pair with images by name, not video frames")
                self._open_video()
            else:
                self._open_images()
        except DatasetError as exc:
            raise CameraError(f"replay {self.name}: {exc}") from exc
        except OSError as exc:  # the folder went away while it was being read
            if not self.path.exists():
                raise CameraLostError(f"replay source {self.path} vanished while opening") from exc
            raise CameraError(f"replay {self.name}: cannot read {self.path}: {exc}") from exc
        self._session += 1
        self._connected = True
        log.info(
            "replay %s: %d images from %s (%s mode, labels %s, %.1f ppm)",
            self.name, len(self._items), self.path, self.mode, self.label_format, self.config.rate_ppm,
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

    def _decode(self, path: Path) -> np.ndarray | None:
        img = cv2.imread(str(path), self._imread_flag())
        if img is None:
            return None
        if img.dtype != np.uint8:  # pragma: no cover - ANYCOLOR without ANYDEPTH is 8-bit
            img = cv2.convertScaleAbs(img)
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        elif img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        return img

    def _open_images(self) -> None:
        self.label_format = "none"
        c = self.config
        items, deeppcb_root = scan_items(
            self.path, recursive=c.recursive, labels=c.labels, deeppcb_images=c.deeppcb_images
        )
        if deeppcb_root:
            self.label_format = "deeppcb-root"
        if not items:
            raise CameraError(f"replay {self.name}: no images ({', '.join(sorted(lbl.IMAGE_SUFFIXES))}) in {self.path}")
        self._attach_labels(items)
        if self.references_dir is not None:
            self._attach_references(items)
        limit = self.config.max_cache_mb * 1024 * 1024
        mode = self.config.mode
        first = self._decode(items[0].path)
        if first is None:
            raise CameraError(f"replay {self.name}: cannot decode {items[0].path}")
        if mode == "auto":
            mode = "cached" if first.nbytes * len(items) <= limit else "pool"
        elif mode == "cached" and first.nbytes * len(items) > limit:
            raise CameraError(
                f"replay {self.name}: {len(items)} images of {first.nbytes / 2**20:.1f} MB would need "
                f"~{first.nbytes * len(items) / 2**20:.0f} MB, over max_cache_mb={self.config.max_cache_mb}; "
                "raise max_cache_mb or use mode: pool"
            )
        self._items = items
        if mode == "cached":
            if not self._fill_cache(items, first, limit):
                if self.config.mode == "cached":
                    raise CameraError(
                        f"replay {self.name}: decoded images exceed max_cache_mb={self.config.max_cache_mb}; "
                        "raise it or use mode: pool"
                    )
                mode = "pool"
        if mode == "pool":
            self._images = []
            self._pool = BufferPool(self.config.pool_size, first.nbytes)
        self.mode = mode

    def _attach_references(self, items: list[ReplayItem]) -> None:
        """Give every item its golden reference: the image of the same stem in `references`."""
        folder = self.references_dir
        assert folder is not None
        if not folder.is_dir():
            raise CameraError(f"replay {self.name}: references {folder} is not a folder")
        by_stem = {f.stem: f for f in sorted(folder.iterdir()) if f.suffix.lower() in lbl.IMAGE_SUFFIXES}
        loaded: dict[Path, np.ndarray] = {}
        for it in items:
            path = reference_for(it.path.stem, by_stem)
            if path is None:
                raise CameraError(
                    f"replay {self.name}: no reference for {it.path.name} in {folder} "
                    "(a file named by its stem, or by the stem cut at an '_')"
                )
            image = loaded.get(path)
            if image is None:
                image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    raise CameraError(f"replay {self.name}: cannot decode reference {path}")
                image.flags.writeable = False
                loaded[path] = image
            it.reference = image

    def _fill_cache(self, items: list[ReplayItem], first: np.ndarray, limit: int) -> bool:
        """Decode every image once (reusing unchanged ones from an earlier open). False: too big."""
        flag = self._imread_flag()
        old, cache = self._cache, {}
        images: list[np.ndarray] = []
        total = 0
        bad: list[ReplayItem] = []
        for i, it in enumerate(items):
            st = it.path.stat()
            key = (str(it.path), st.st_mtime_ns, st.st_size, flag)
            img = old.get(key) if i else first
            if img is None:
                img = self._decode(it.path)
            if img is None:
                self.decode_errors += 1
                log.warning("replay %s: cannot decode %s; skipped", self.name, it.path)
                bad.append(it)
                continue
            total += img.nbytes
            if total > limit:
                self._cache = {}
                return False
            img.flags.writeable = False
            cache[key] = img
            images.append(img)
            it.truth_for(img.shape[1], img.shape[0])
        if bad:
            for it in bad:
                items.remove(it)
            if not items:
                raise CameraError(f"replay {self.name}: none of the images in {self.path} can be decoded")
        self._cache, self._images = cache, images
        return True

    def _open_video(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            if not self.path.exists():
                raise CameraLostError(f"replay source {self.path} does not exist")
            raise CameraError(f"replay {self.name}: cannot open video {self.path}")
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w <= 0 or h <= 0:
            ok, probe = cap.read()
            if not ok:
                cap.release()
                raise CameraError(f"replay {self.name}: video {self.path} has no frames")
            h, w = probe.shape[:2]
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if self._pos:
            cap.set(cv2.CAP_PROP_POS_FRAMES, self._pos)  # a reconnect continues where it stopped
        self._video = cap
        self._items = []
        self.label_format = "none"
        gray = self.config.grayscale is True
        self._video_shape = (h, w) if gray else (h, w, 3)
        self._scratch = np.empty((h, w, 3), np.uint8) if gray else None
        self._pool = BufferPool(self.config.pool_size, int(np.prod(self._video_shape)))
        self.mode = "pool"

    # -- close -----------------------------------------------------------------------------
    def _close_source(self, got_lock: bool) -> None:
        if self._video is not None:
            if got_lock:  # else a read is still running: leave the capture to the garbage collector
                self._video.release()
            self._video = None
        self._images = []
        if self.mode != "closed":
            self.mode = "closed"

    # -- frames ----------------------------------------------------------------------------
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
            if max_frames is not None and self.frames_delivered + self.frames_error >= max_frames:
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
                    while len(self._held) >= limit and not self._closing.is_set():
                        self._room.wait(0.05)
            frame = self._next_frame(session)
            if frame is None:
                return
            emitted += 1
            yield frame

    def _next_frame(self, session: int) -> Frame | None:
        """The next frame (or an error frame); None when the source ended or the camera closed."""
        with self._io_lock:
            if session != self._session:
                return None
            if self._video is not None:
                return self._next_video_frame()
            item = self._items[self._pos]
            part = item.part if self._loop_index == 0 else f"{item.part}#{self._loop_index}"
            self._pos += 1
            if self.mode == "cached":
                cached = self._images[self._pos - 1]
                truth = item.truth_for(cached.shape[1], cached.shape[0])
                return self._make(cached.view(), part, truth, None, item.reference)
            pool = self._pool
            assert pool is not None
            index = pool.acquire(self.config.pool_wait_s if self.period_s else None)
            if index is None:
                if self._closing.is_set():
                    return None
                self.frames_dropped += 1
                return self._error(part, f"no free replay buffer (all {pool.size} held)", item.truth)
            img = self._decode(item.path)
            if img is None:
                pool.give_back(index)
                if not os.path.exists(self.path):
                    raise CameraLostError(f"replay source {self.path} vanished")
                self.decode_errors += 1
                return self._error(part, f"cannot decode {item.path.name}", item.truth)
            buf = pool.view(index, img.shape)
            np.copyto(buf, img)
            view = buf.view()
            view.flags.writeable = False
            return self._make(view, part, item.truth_for(img.shape[1], img.shape[0]), index, item.reference)

    def _next_video_frame(self) -> Frame | None:
        cap, pool = self._video, self._pool
        assert cap is not None and pool is not None
        index = pool.acquire(self.config.pool_wait_s if self.period_s else None)
        if index is None:
            if self._closing.is_set():
                return None
            self.frames_dropped += 1
            part = self._video_part()
            self._pos += 1
            cap.grab()  # the line moved on: this frame is lost
            return self._error(part, f"no free replay buffer (all {pool.size} held)", None)
        buf = pool.view(index, self._video_shape)
        while True:
            if self._scratch is not None:
                ok, _ = cap.read(image=self._scratch)
                if ok:
                    cv2.cvtColor(self._scratch, cv2.COLOR_BGR2GRAY, dst=buf)
            else:
                ok, out = cap.read(image=buf)
                if ok and not np.shares_memory(out, buf):  # the decoder reallocated: size changed
                    if out.shape != buf.shape:
                        pool.give_back(index)
                        raise CameraError(f"replay {self.name}: video frame size changed to {out.shape}")
                    np.copyto(buf, out)
            if ok:
                part = self._video_part()
                self._pos += 1
                view = buf.view()
                view.flags.writeable = False
                return self._make(view, part, None, index)
            # end of the video, or the file went away
            if not os.path.exists(self.path):
                pool.give_back(index)
                raise CameraLostError(f"replay source {self.path} vanished")
            if self._pos == 0:  # nothing readable in a whole pass
                pool.give_back(index)
                if self._loop_index == 0:
                    raise CameraError(f"replay {self.name}: video {self.path} has no frames")
                return None
            if not self.config.loop:
                pool.give_back(index)
                return None
            cap = self._video = rewind(cap, lambda: cv2.VideoCapture(str(self.path)))
            self._pos = 0
            self._loop_index += 1

    def _video_part(self) -> str:
        part = f"{self.path.stem}-{self._pos}"
        return part if self._loop_index == 0 else f"{part}#{self._loop_index}"

    # -- release / health ------------------------------------------------------------------
    def release(self, frame: Frame) -> None:
        super().release(frame)
        if self.config.max_in_flight is not None:
            with self._room:
                self._room.notify()

    def health(self) -> dict[str, Any]:
        cache_bytes = sum(a.nbytes for a in self._images)
        return {
            "type": "replay",
            "connected": self._connected,
            "source": str(self.path),
            "mode": self.mode,
            "labels": self.label_format,
            "items": len(self._items),
            "position": self._pos,
            "loops": self._loop_index,
            **self._frame_counts(),
            "decode_errors": self.decode_errors,
            "behind_schedule": self.behind_schedule,
            **self._release_counts(),
            "cache_mb": round(cache_bytes / 2**20, 1),
            "pool_free": self._pool.free if self._pool is not None else None,
            "last_error": self.last_error,
        }
