"""Reject evidence: the frame of every REJECT and FAILSAFE (and a sample of PASS) kept on disk.

    emitter thread: listener(verdict, frame) --one copy--> pool slot --queue--> encoder thread
                                                                          |
          capture: <id>.frame.jpg (the frame, encoded once), <id>.thumb.jpg, <id>.meta.json
                   (the verdict record: detections, the rule that fired), refs/<sha1>.png (the
                   golden reference, once per distinct reference)
        on demand: <id>.jpg (detections drawn), <id>.heat.jpg (|part - reference|), rendered on the
                   first request from the kept frame and record, then cached beside them

The listener runs in the pipeline's emitting thread before the camera buffer is released: it
copies the frame (and a per-frame golden reference, unless it is an immutable array the camera
keeps, which is held instead) once into a free slot of a pool allocated at start and returns;
when no slot is free the evidence is skipped and counted, the verdict never waits. A
lower-priority encoder thread encodes and writes what capture time needs (the overlays and the
heat map cost more than the frame's own encoding: they are drawn only for the verdicts someone
looks at), then gives the slot back. Files are named by the verdict's
result id and found only by it (an id is checked against its pattern before any path is
made). Retention by count, age and free disk; a reference file goes with the last verdict
that uses it.
"""

from __future__ import annotations

import hashlib
import json
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
REF_ID = re.compile(r"^[0-9a-f]{40}$")
_SUFFIX = {"image": "", "heat": ".heat", "thumb": ".thumb"}
_PARTS = ("", ".heat", ".thumb", ".frame", ".meta")  # every file of one verdict's evidence
_STOP = object()
# references known by identity (a replay folder's, a camera table's), held so that an id is not
# reused while it is a key: at most this many, and this many bytes (a camera that makes a new
# reference array per frame never hits, and must not have its arrays kept alive here)
FIXED_REFS_KNOWN = 256
FIXED_REFS_BYTES = 64 * 1024 * 1024


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
    encoder_idle: bool = Field(
        False,
        description="Run the encoder thread under SCHED_IDLE (Linux) while the pool has room: it then takes only "
        "CPU time no other thread wants, so it does not slow inference (whose thread pool waits for every one of "
        "its threads); once half the slots wait it runs at encoder_nice again. For a station with idle CPU between "
        "parts: where inference keeps the CPU busy, evidence is skipped much more often (measured: ~45 % of "
        "rejects with back-to-back frames on 2 cores). Needs root or an RLIMIT_NICE (systemd LimitNICE) allowing "
        "encoder_nice; otherwise off.",
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
    """Verdict listener + encoder thread + on-demand renderer + retention. See the module doc."""

    def __init__(
        self,
        config: EvidenceConfig,
        out_dir: Path,
        index: EvidenceIndex | None = None,
        references_for: Callable[[str], np.ndarray | None] | None = None,
    ) -> None:
        self.config = config
        self.dir = Path(out_dir)
        self.refs_dir = self.dir / "refs"
        self.index = index
        self.references_for = references_for
        self.slot_bytes = int(config.max_frame_mb * 1024 * 1024)
        self._pool: list[np.ndarray] = []
        self._free: deque[int] = deque()
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=config.pool_slots + 1)
        self._thread: threading.Thread | None = None
        self._pass_acc = 0.0
        # id -> (bytes, created wall ns, reference hash or None)
        self._kept: OrderedDict[str, tuple[int, int, str | None]] = OrderedDict()
        self._kept_lock = threading.Lock()
        self._refs: dict[str, int] = {}  # reference hash -> kept verdicts using it
        # id(camera reference) -> (it, hash), least recently used first
        self._fixed_refs: OrderedDict[int, tuple[np.ndarray, str]] = OrderedDict()
        self.counts = {
            "offered": 0,
            "taken": 0,
            "written": 0,
            "skipped_pool_full": 0,
            "skipped_too_large": 0,
            "sampled_out": 0,
            "errors": 0,
            "deleted": 0,
            "rendered": 0,
            "references": 0,
        }
        self.last_error: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.refs_dir.mkdir(exist_ok=True)
        # np.empty: the pages are only touched when a slot is first used
        self._pool = [np.empty(self.slot_bytes, np.uint8) for _ in range(self.config.pool_slots)]
        self._free = deque(range(self.config.pool_slots))
        # the evidence of earlier runs is indexed by the encoder thread before its first job: reading
        # one small record per kept verdict (10,000 at the default retention) does not delay the start
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
        kept_ref: np.ndarray | None = None
        if reference is not None and _immutable(reference):
            kept_ref, reference = reference, None  # the camera's own: held, not copied
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
        self._jobs.put_nowait((slot, verdict, array.shape, frame.channel_order, ref_shape, kept_ref))
        c["taken"] += 1

    # -- serving (request threads) -------------------------------------------------------------------
    def _file(self, evidence_id: str, part: str, ext: str) -> Path:
        return self.dir / f"{evidence_id}{part}.{ext}"

    def _valid(self, evidence_id: Any, kind: str) -> bool:
        return kind in _SUFFIX and isinstance(evidence_id, str) and bool(EVIDENCE_ID.match(evidence_id))

    def _meta(self, evidence_id: str) -> dict[str, Any] | None:
        try:
            meta = json.loads(self._file(evidence_id, ".meta", "json").read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def path_for(self, evidence_id: str, kind: str = "image") -> Path | None:
        """The file of one kind for an evidence id, or None (bad id, unknown kind, not kept).

        The thumbnail is written at capture; the image with its detections drawn and the heat
        map are rendered from the kept frame on the first request and cached beside it."""
        if not self._valid(evidence_id, kind):
            return None
        path = self._file(evidence_id, _SUFFIX[kind], self._ext(kind))
        if path.is_file():
            return path
        if kind == "thumb":
            return None
        try:
            return self._render(evidence_id, kind, path)
        except Exception as exc:  # an unreadable frame is a missing image, not a server error
            self.counts["errors"] += 1
            self.last_error = f"{evidence_id} {kind}: {exc}"
            log.warning("evidence: cannot render %s %s: %s", kind, evidence_id, exc)
            return None

    def has(self, evidence_id: str) -> bool:
        with self._kept_lock:
            return evidence_id in self._kept

    def kinds(self, evidence_id: str) -> list[str]:
        """The kinds of evidence kept (or renderable) for an id, without rendering any."""
        if not self._valid(evidence_id, "image"):
            return []
        out = [k for k in KINDS if self._file(evidence_id, _SUFFIX[k], self._ext(k)).is_file()]
        meta = self._meta(evidence_id)
        if meta is not None and self._file(evidence_id, ".frame", str(meta.get("ext"))).is_file():
            if "image" not in out:
                out.append("image")
            ref = meta.get("reference")
            if "heat" not in out and isinstance(ref, str) and self._ref_path(ref).is_file():
                out.append("heat")
        return [k for k in KINDS if k in out]

    def _render(self, evidence_id: str, kind: str, path: Path) -> Path | None:
        meta = self._meta(evidence_id)
        if meta is None:
            return None
        ext = str(meta.get("ext"))
        stored = self._file(evidence_id, ".frame", ext)
        if ext not in ("jpg", "png") or not stored.is_file():
            return None
        record = meta.get("verdict") or {}
        flag = cv2.IMREAD_UNCHANGED
        frame = cv2.imread(str(stored), flag)
        if frame is None:
            raise OSError(f"cannot decode {stored.name}")
        if kind == "heat":
            ref = meta.get("reference")
            if not isinstance(ref, str) or not REF_ID.match(ref):
                return None
            reference = cv2.imread(str(self._ref_path(ref)), cv2.IMREAD_GRAYSCALE)
            grey = frame if frame.ndim == 2 else frame[:, :, int(meta.get("channel", 0))]
            if reference is None or reference.shape != grey.shape:
                return None
            image = draw_detections(heat_map(grey, reference), record)
        else:
            image = draw_detections(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame, record)
        size = self._write_file(path, image, self._params(self._ext(kind)))
        self.counts["rendered"] += 1
        with self._kept_lock:
            kept = self._kept.get(evidence_id)
            if kept is not None:
                self._kept[evidence_id] = (kept[0] + size, kept[1], kept[2])
        return path

    def health(self) -> dict[str, Any]:
        with self._kept_lock:
            kept = len(self._kept)
            size = sum(k[0] for k in self._kept.values())
            refs = len(self._refs)
        return {
            **self.counts,
            "kept": kept,
            "bytes": size,
            "reference_files": refs,
            "pool_free": len(self._free),
            "pool_slots": self.config.pool_slots,
            "backlog": self._jobs.qsize(),
            "dir": str(self.dir),
            "last_error": self.last_error,
        }

    # -- encoder thread --------------------------------------------------------------------------
    def _ext(self, kind: str) -> str:
        return "jpg" if kind == "thumb" else self.config.format

    def _params(self, ext: str, quality: int | None = None) -> list[int]:
        if ext == "png":
            return [cv2.IMWRITE_PNG_COMPRESSION, 1]
        return [cv2.IMWRITE_JPEG_QUALITY, quality or self.config.jpeg_quality]

    def _ref_path(self, ref: str) -> Path:
        return self.refs_dir / f"{ref}.png"

    def _run(self) -> None:
        tid = threading.get_native_id()
        try:  # below the inference worker: encoding yields to it on a busy CPU
            os.setpriority(os.PRIO_PROCESS, tid, self.config.encoder_nice)
        except (OSError, AttributeError):
            pass
        try:
            self._scan()
        except Exception:  # an unreadable folder must not stop the evidence of this run
            self.counts["errors"] += 1
            log.exception("evidence: cannot index the evidence of earlier runs in %s", self.dir)
        idle = False
        use_idle = self.config.encoder_idle and _can_leave_idle(self.config.encoder_nice)
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            # SCHED_IDLE while the pool has room: encoding takes only CPU time nothing else wants;
            # back to the (niced) normal class once half the slots wait, so it is never starved
            want_idle = use_idle and 2 * len(self._free) >= self.config.pool_slots - 1
            if want_idle != idle:
                idle = self._set_idle(tid, want_idle)
            slot, verdict, shape, order, ref_shape, kept_ref = job
            try:
                self._encode(slot, verdict, shape, order, ref_shape, kept_ref)
            except Exception as exc:  # one bad frame must not stop the evidence of the next
                self.counts["errors"] += 1
                self.last_error = f"{verdict.result_id}: {exc}"
                log.exception("evidence: cannot write %s", verdict.result_id)
            finally:
                self._free.append(slot)

    def _set_idle(self, tid: int, idle: bool) -> bool:
        try:
            policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
            os.sched_setscheduler(tid, policy, os.sched_param(0))  # the niceness is kept
        except (OSError, AttributeError):
            return False
        return idle

    def _reference_id(
        self, buf: np.ndarray, n: int, ref_shape: Any, camera: str, kept_ref: np.ndarray | None
    ) -> str | None:
        """The content hash of the frame's golden reference, its PNG written once per distinct one.

        A reference the camera holds for good (its table, or an immutable array of its own, like
        the replay camera's per-image references) is hashed once and then known by identity."""
        reference: np.ndarray | None = None
        ref: str | None = None
        fixed: np.ndarray | None = kept_ref
        if ref_shape is not None:
            reference = buf[n : n + int(np.prod(ref_shape))].reshape(ref_shape)
        elif fixed is None and self.references_for is not None:
            fixed = self.references_for(camera)
        if fixed is not None:
            known = self._fixed_refs.get(id(fixed))
            if known is not None and known[0] is fixed:
                ref = known[1]
                self._fixed_refs.move_to_end(id(fixed))
            reference = fixed
        if reference is None:
            return None
        if reference.ndim == 3:
            reference = reference[:, :, 0]
        if ref is None:
            h = hashlib.sha1(usedforsecurity=False)
            h.update(repr(reference.shape).encode())
            h.update(np.ascontiguousarray(reference).data)
            ref = h.hexdigest()
            if fixed is not None:
                self._fixed_refs[id(fixed)] = (fixed, ref)
                held = sum(a.nbytes for a, _ in self._fixed_refs.values())
                while len(self._fixed_refs) > 1 and (
                    len(self._fixed_refs) > FIXED_REFS_KNOWN or held > FIXED_REFS_BYTES
                ):
                    _, (gone, _) = self._fixed_refs.popitem(last=False)
                    held -= gone.nbytes
        path = self._ref_path(ref)
        if not path.is_file():
            self._write_file(path, np.ascontiguousarray(reference), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            self.counts["references"] += 1
        return ref

    def _encode(
        self,
        slot: int,
        verdict: Verdict,
        shape: tuple[int, ...],
        order: str,
        ref_shape: Any,
        kept_ref: np.ndarray | None,
    ) -> None:
        """Capture time: the frame encoded once, a thumbnail, the record; overlays come on demand."""
        buf = self._pool[slot]
        n = int(np.prod(shape))
        frame: np.ndarray = buf[:n].reshape(shape)
        channel = 0  # a golden-reference model compares the first channel with the reference
        if frame.ndim == 3 and order == "RGB":
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR if shape[2] == 3 else cv2.COLOR_RGBA2BGR)
            channel = 2
        elif frame.ndim == 3 and shape[2] != 3:
            frame = np.ascontiguousarray(frame[:, :, :3])
        ref = self._reference_id(buf, n, ref_shape, verdict.camera, kept_ref)
        record = verdict.to_dict()
        rid = verdict.result_id
        ext = self.config.format
        size = self._write_file(self._file(rid, ".frame", ext), frame, self._params(ext))
        h, w = frame.shape[:2]
        tw = min(self.config.thumb_width, w)
        # linear interpolation of the frame, then the boxes drawn at thumbnail scale
        thumb = cv2.resize(frame, (tw, max(1, round(h * tw / w))), interpolation=cv2.INTER_LINEAR)
        if thumb.ndim == 2:
            thumb = cv2.cvtColor(thumb, cv2.COLOR_GRAY2BGR)
        size += self._write_file(
            self._file(rid, ".thumb", "jpg"), draw_detections(thumb, _scaled(record, tw / w)), self._params("jpg", 80)
        )
        meta = {"verdict": record, "ext": ext, "channel": channel, "reference": ref}
        size += self._write_bytes(self._file(rid, ".meta", "json"), json.dumps(meta, separators=(",", ":")).encode())
        files = {"frame": f"{rid}.frame.{ext}", "thumb": f"{rid}.thumb.jpg", "meta": f"{rid}.meta.json"}
        now = time.time_ns()
        with self._kept_lock:
            self._kept[rid] = (size, now, ref)
            if ref is not None:
                self._refs[ref] = self._refs.get(ref, 0) + 1
        if self.index is not None:
            self.index.add_evidence(rid, files, size)
        self.counts["written"] += 1
        self._retain(now)

    def _write_file(self, path: Path, image: np.ndarray, params: list[int]) -> int:
        ok, data = cv2.imencode(path.suffix, image, params)
        if not ok:
            raise OSError(f"cannot encode {path.name}")
        return self._write_bytes(path, data)

    def _write_bytes(self, path: Path, data: Any) -> int:
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")  # request threads may race
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return len(memoryview(data).cast("B"))

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
                meta = self._meta(rid)
                ref = meta.get("reference") if meta is not None else None
                ref = ref if isinstance(ref, str) and REF_ID.match(ref) else None
                self._kept[rid] = (found[rid], _ns_of(rid), ref)
                if ref is not None:
                    self._refs[ref] = self._refs.get(ref, 0) + 1
            used = set(self._refs)
        for p in self.refs_dir.iterdir():  # references no kept verdict uses (a crash mid-retention)
            if p.suffix == ".png" and p.stem not in used:
                p.unlink(missing_ok=True)
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
                _, _, ref = self._kept.pop(rid)
                unused = None
                if ref is not None:
                    left = self._refs.get(ref, 1) - 1
                    if left <= 0:
                        self._refs.pop(ref, None)
                        unused = ref
                    else:
                        self._refs[ref] = left
            for part in _PARTS:
                for ext in ("jpg", "png", "json"):
                    (self.dir / f"{rid}{part}.{ext}").unlink(missing_ok=True)
            if unused is not None:
                self._ref_path(unused).unlink(missing_ok=True)
            gone.append(rid)
        if gone:
            self.counts["deleted"] += len(gone)
            if self.index is not None:
                self.index.remove_evidence(gone)
            log.debug("evidence: retention deleted %s", len(gone))


def _immutable(array: np.ndarray) -> bool:
    """Whether an array can be held instead of copied: read-only and owning its memory, so nothing
    can write to it (a read-only *view* may be of a camera buffer that is reused after release)."""
    return array.base is None and not array.flags.writeable


def _can_leave_idle(nice: int) -> bool:
    """Whether this process may switch a thread from SCHED_IDLE back to SCHED_OTHER at `nice`
    (root, or RLIMIT_NICE allowing it): without that it would stay idle and could starve."""
    try:
        import resource

        return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20 - nice
    except (ImportError, AttributeError, OSError, ValueError):
        return False


def _scaled(record: dict[str, Any], f: float) -> dict[str, Any]:
    """The record with its detection boxes scaled by f (for drawing on a thumbnail)."""

    def box(b: Any) -> list[float]:
        return [float(v) * f for v in b]

    dets = [{**d, "box": box(d["box"])} for d in record.get("detections", [])]
    reasons = [
        {**r, "detection": {**r["detection"], "box": box(r["detection"]["box"])}}
        if isinstance(r.get("detection"), dict)
        else r
        for r in record.get("reasons", [])
    ]
    return {**record, "detections": dets, "reasons": reasons}
