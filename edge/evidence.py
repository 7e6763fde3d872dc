"""Reject evidence: the frame of every REJECT and FAILSAFE (and a sample of PASS) kept on disk.

    emitter thread: listener(verdict, frame) --one copy--> pool slot --queue--> encoder thread
                                                                          |
              <id>.jpg (detections drawn), <id>.heat.jpg (|part - reference|), <id>.thumb.jpg

The listener runs in the pipeline's emitting thread before the camera buffer is released: it
copies the frame (and a per-frame golden reference) once into a free slot of a pool allocated
at start and returns; when no slot is free the evidence is skipped and counted, the verdict
never waits. A lower-priority encoder thread draws, encodes and writes the files, then gives
the slot back. Files are named by the verdict's result id and found only by it (an id is
checked against its pattern before any path is made). Retention by count, age and free disk.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cameras.base import Frame
from edge.verdict import Verdict, VerdictKind

log = logging.getLogger(__name__)

EVIDENCE_ID = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{4}-[0-9a-f]{8}$")
KINDS = ("image", "heat", "thumb")
_SUFFIX = {"image": "", "heat": ".heat", "thumb": ".thumb"}
_STOP = object()


class EvidenceConfig(BaseModel):
    """The `evidence:` section."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Keep images of REJECT and FAILSAFE verdicts (and sampled PASS).")
    dir: str | None = Field(
        None, description="Folder for the evidence files (relative to the config file); default: <state_dir>/evidence."
    )
    pass_sample: float = Field(0.0, ge=0, le=1, description="Fraction of PASS verdicts whose image is kept too.")
    format: Literal["jpg", "png"] = Field("jpg", description="Image format of the evidence files.")
    jpeg_quality: int = Field(90, ge=30, le=100)
    thumb_width: int = Field(240, ge=64, le=1024, description="Width of the thumbnails shown on the status page.")
    pool_slots: int = Field(
        8, ge=1, le=256, description="Frames waiting to be encoded at once; beyond that evidence is skipped."
    )
    max_frame_mb: float = Field(
        25.0, gt=0, le=512, description="Largest frame (plus its golden reference) a pool slot holds, in MiB."
    )
    encoder_nice: int = Field(
        10, ge=0, le=19, description="Niceness of the encoder thread (Linux): higher yields more to inference."
    )
    max_items: int = Field(10000, ge=1, description="Most verdicts with evidence kept (oldest deleted first).")
    max_age_days: float = Field(30.0, gt=0, description="Evidence older than this is deleted.")
    min_free_mb: float = Field(
        512.0, ge=0, description="Delete the oldest evidence while the disk has less free space than this."
    )

    def resolve_dir(self, base_dir: Path, state_dir: Path | None = None) -> Path:
        if self.dir is None:
            return (state_dir if state_dir is not None else Path(base_dir) / "state") / "evidence"
        p = Path(self.dir).expanduser()
        return p if p.is_absolute() else Path(base_dir) / p


class EvidenceIndex(Protocol):
    """Where kept evidence is recorded besides the files (the audit store)."""

    def add_evidence(self, result_id: str, files: dict[str, str], size: int) -> None: ...

    def remove_evidence(self, result_ids: list[str]) -> None: ...


def _ns_of(evidence_id: str) -> int:
    return int(evidence_id[:16], 16)


def draw_detections(image: np.ndarray, verdict: dict[str, Any] | Verdict) -> np.ndarray:
    """The image (BGR, drawn on in place) with each detection's box, class and confidence."""
    d = verdict.to_dict() if isinstance(verdict, Verdict) else verdict
    firing = {tuple(r["detection"]["box"]) for r in d.get("reasons", []) if isinstance(r.get("detection"), dict)}
    h, w = image.shape[:2]
    thick = max(1, round(min(h, w) / 320))
    for det in d.get("detections", []):
        x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
        colour = (0, 0, 255) if tuple(det["box"]) in firing or d.get("verdict") == "REJECT" else (0, 165, 255)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick + 1)
        label = f"{det['class']} {det['confidence']:.2f}"
        scale = 0.4 * thick + 0.1
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 3 if y1 - th - 4 > 0 else y2 + th + 3
        cv2.rectangle(image, (x1, ty - th - 2), (x1 + tw + 2, ty + 2), colour, -1)
        cv2.putText(image, label, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def heat_map(part_grey: np.ndarray, reference_grey: np.ndarray, floor: int = 24) -> np.ndarray:
    """|part - reference| as a heat map (BGR): where the part differs from its golden reference
    by more than `floor` grey levels, the difference in colour (twice the grey difference on the
    plasma scale, so images compare), elsewhere the part itself, dimmed."""
    diff = cv2.absdiff(part_grey, reference_grey)
    # plasma: small differences purple, large ones bright yellow, both visible on the dimmed part
    coloured = cv2.applyColorMap(cv2.convertScaleAbs(diff, alpha=2.0), cv2.COLORMAP_PLASMA)
    out = cv2.cvtColor(cv2.convertScaleAbs(part_grey, alpha=0.45, beta=40), cv2.COLOR_GRAY2BGR)
    _, mask = cv2.threshold(diff, floor, 255, cv2.THRESH_BINARY)
    cv2.copyTo(coloured, mask, out)  # OpenCV, not numpy masking: releases the GIL for the worker
    return out


class EvidenceRecorder:
    """Verdict listener + encoder thread + retention. See the module doc."""

    def __init__(
        self,
        config: EvidenceConfig,
        out_dir: Path,
        index: EvidenceIndex | None = None,
        references_for: Callable[[str], np.ndarray | None] | None = None,
    ) -> None:
        self.config = config
        self.dir = Path(out_dir)
        self.index = index
        self.references_for = references_for
        self.slot_bytes = int(config.max_frame_mb * 1024 * 1024)
        self._pool: list[np.ndarray] = []
        self._free: deque[int] = deque()
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=config.pool_slots + 1)
        self._thread: threading.Thread | None = None
        self._pass_acc = 0.0
        self._kept: OrderedDict[str, tuple[int, int]] = OrderedDict()  # id -> (bytes, created wall ns)
        self._kept_lock = threading.Lock()
        self.counts = {
            "offered": 0,
            "taken": 0,
            "written": 0,
            "skipped_pool_full": 0,
            "skipped_too_large": 0,
            "sampled_out": 0,
            "errors": 0,
            "deleted": 0,
        }
        self.last_error: str | None = None
        self._written_bytes = 0  # of the verdict being encoded (encoder thread only)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # np.empty: the pages are only touched when a slot is first used
        self._pool = [np.empty(self.slot_bytes, np.uint8) for _ in range(self.config.pool_slots)]
        self._free = deque(range(self.config.pool_slots))
        self._scan()
        self._thread = threading.Thread(target=self._run, name="evidence-encoder", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        try:
            self._jobs.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("evidence: encoder still busy at close")
        self._thread.join(timeout)
        self._thread = None

    # -- the listener (emitting thread; must not block) ----------------------------------------
    def __call__(self, verdict: Verdict, frame: Frame) -> None:
        c = self.counts
        c["offered"] += 1
        if verdict.verdict is VerdictKind.PASS:
            self._pass_acc += self.config.pass_sample
            if self._pass_acc < 1.0:
                c["sampled_out"] += 1
                return
            self._pass_acc -= 1.0
        array = frame.array
        reference = frame.reference
        need = array.nbytes + (reference.nbytes if reference is not None else 0)
        if need > self.slot_bytes or array.dtype != np.uint8 or array.ndim not in (2, 3):
            c["skipped_too_large"] += 1
            return
        try:
            slot = self._free.popleft()
        except IndexError:
            c["skipped_pool_full"] += 1
            return
        buf = self._pool[slot]
        np.copyto(buf[: array.nbytes].reshape(array.shape), array)  # the one copy (works on strided views)
        ref_shape = None
        if reference is not None:
            ref_shape = reference.shape
            np.copyto(buf[array.nbytes : need].reshape(reference.shape), reference)
        self._jobs.put_nowait((slot, verdict, array.shape, frame.channel_order, ref_shape))
        c["taken"] += 1

    # -- serving -----------------------------------------------------------------------------------
    def path_for(self, evidence_id: str, kind: str = "image") -> Path | None:
        """The file of one kind for an evidence id, or None (bad id, unknown kind, not kept)."""
        if kind not in _SUFFIX or not isinstance(evidence_id, str) or not EVIDENCE_ID.match(evidence_id):
            return None
        path = self.dir / f"{evidence_id}{_SUFFIX[kind]}.{self._ext(kind)}"
        return path if path.is_file() else None

    def has(self, evidence_id: str) -> bool:
        with self._kept_lock:
            return evidence_id in self._kept

    def kinds(self, evidence_id: str) -> list[str]:
        return [k for k in KINDS if self.path_for(evidence_id, k) is not None]

    def health(self) -> dict[str, Any]:
        with self._kept_lock:
            kept = len(self._kept)
            size = sum(b for b, _ in self._kept.values())
        return {
            **self.counts,
            "kept": kept,
            "bytes": size,
            "pool_free": len(self._free),
            "pool_slots": self.config.pool_slots,
            "backlog": self._jobs.qsize(),
            "dir": str(self.dir),
            "last_error": self.last_error,
        }

    # -- encoder thread --------------------------------------------------------------------------
    def _ext(self, kind: str) -> str:
        return "jpg" if kind == "thumb" else self.config.format

    def _run(self) -> None:
        try:  # below the inference worker: encoding yields to it on a busy CPU
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.encoder_nice)
        except (OSError, AttributeError):
            pass
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            slot, verdict, shape, order, ref_shape = job
            try:
                self._encode(slot, verdict, shape, order, ref_shape)
            except Exception as exc:  # one bad frame must not stop the evidence of the next
                self.counts["errors"] += 1
                self.last_error = f"{verdict.result_id}: {exc}"
                log.exception("evidence: cannot write %s", verdict.result_id)
            finally:
                self._free.append(slot)

    def _encode(self, slot: int, verdict: Verdict, shape: tuple[int, ...], order: str, ref_shape: Any) -> None:
        buf = self._pool[slot]
        n = int(np.prod(shape))
        frame = buf[:n].reshape(shape)
        if frame.ndim == 2:
            image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        else:
            image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if order == "RGB" else frame[:, :, :3].copy()
        reference: np.ndarray | None = None
        if ref_shape is not None:
            reference = buf[n : n + int(np.prod(ref_shape))].reshape(ref_shape)
        elif self.references_for is not None:
            reference = self.references_for(verdict.camera)
        if reference is not None and reference.ndim == 3:
            reference = reference[:, :, 0]
        # a golden-reference model compares the first channel with the reference (edge.reference)
        grey = frame if frame.ndim == 2 else frame[:, :, 0]
        record = verdict.to_dict()
        files: dict[str, str] = {}
        params = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality] if self.config.format == "jpg" else []
        rid = verdict.result_id
        drawn = draw_detections(image, record)
        files["image"] = self._write(rid, "image", drawn, params)
        h, w = drawn.shape[:2]
        tw = min(self.config.thumb_width, w)
        # linear (not area) interpolation: a tenth of the time, and the boxes are drawn thick enough
        thumb = cv2.resize(drawn, (tw, max(1, round(h * tw / w))), interpolation=cv2.INTER_LINEAR)
        files["thumb"] = self._write(rid, "thumb", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if reference is not None and reference.shape == grey.shape:
            files["heat"] = self._write(rid, "heat", draw_detections(heat_map(grey, reference), record), params)
        size = self._written_bytes
        self._written_bytes = 0
        now = time.time_ns()
        with self._kept_lock:
            self._kept[rid] = (size, now)
        if self.index is not None:
            self.index.add_evidence(rid, files, size)
        self.counts["written"] += 1
        self._retain(now)

    def _write(self, rid: str, kind: str, image: np.ndarray, params: list[int]) -> str:
        name = f"{rid}{_SUFFIX[kind]}.{self._ext(kind)}"
        ok, data = cv2.imencode(f".{self._ext(kind)}", image, params)
        if not ok:
            raise OSError(f"cannot encode {name}")
        tmp = self.dir / f".{name}.tmp"
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, self.dir / name)
        self._written_bytes += int(data.nbytes)
        return name

    # -- retention ----------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Index the evidence already on disk (from earlier runs), oldest first."""
        found: dict[str, int] = {}
        for p in self.dir.iterdir():
            rid = p.name.split(".", 1)[0]
            if EVIDENCE_ID.match(rid) and p.is_file():
                found[rid] = found.get(rid, 0) + p.stat().st_size
        with self._kept_lock:
            for rid in sorted(found):
                self._kept[rid] = (found[rid], _ns_of(rid))
        self._retain(time.time_ns())

    def _free_mb(self) -> float:
        try:
            return shutil.disk_usage(self.dir).free / (1024 * 1024)
        except OSError:
            return float("inf")

    def _retain(self, now_ns: int) -> None:
        oldest_ok = now_ns - int(self.config.max_age_days * 86400e9)
        gone: list[str] = []
        while True:
            with self._kept_lock:
                if not self._kept:
                    break
                rid = next(iter(self._kept))
                over = len(self._kept) > self.config.max_items or _ns_of(rid) < oldest_ok
                if not over and self.config.min_free_mb > 0 and len(self._kept) > 1:
                    over = self._free_mb() < self.config.min_free_mb
                if not over:
                    break
                self._kept.pop(rid)
            for kind in KINDS:
                for ext in {self._ext(kind), "jpg", "png"}:
                    (self.dir / f"{rid}{_SUFFIX[kind]}.{ext}").unlink(missing_ok=True)
            gone.append(rid)
        if gone:
            self.counts["deleted"] += len(gone)
            if self.index is not None:
                self.index.remove_evidence(gone)
            log.debug("evidence: retention deleted %s", len(gone))
