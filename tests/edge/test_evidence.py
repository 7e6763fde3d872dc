"""Evidence: one copy into a bounded pool, encoding off the caller, files by id only, retention."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cameras.base import Frame
from edge.audit import AuditStore
from edge.evidence import EvidenceConfig, EvidenceRecorder, _can_leave_idle
from edge.verdict import Detection, Reason, Verdict, VerdictKind, new_result_id


def verdict(kind: VerdictKind, i: int = 0, wall_ns: int | None = None, camera: str = "cam") -> Verdict:
    det = Detection(0, "open", 0.91, (20.0, 30.0, 60.0, 70.0))
    dets = (det,) if kind is VerdictKind.REJECT else ()
    reasons = (Reason("max_count", "open: 1 > 0", det),) if kind is VerdictKind.REJECT else ()
    wall = time.time_ns() if wall_ns is None else wall_ns
    return Verdict(
        new_result_id(wall), f"p{i}", i, camera, kind, reasons, dets, 0, 0, 1, 2, wall, {"total": 1.0}, "m", "c"
    )


def frame(array: np.ndarray, reference: np.ndarray | None = None, i: int = 0) -> Frame:
    return Frame(array=array, frame_id=i, part_id=f"p{i}", camera="cam", captured_ns=0, reference=reference)


def wait_for(cond: object, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def board(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (120, 160), dtype=np.uint8)


def test_reject_frame_is_copied_once_and_written_with_heat_map(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.db")
    rec = EvidenceRecorder(EvidenceConfig(enabled=True, min_free_mb=0), tmp_path / "ev", index=store)
    rec.start()
    part = np.tile(np.linspace(40, 120, 160, dtype=np.uint8), (120, 1))  # a smooth board
    ref = part.copy()
    part[30:70, 20:60] = 255  # the defect
    v = verdict(VerdictKind.REJECT)
    rec(v, frame(part, ref))
    # the camera reuses its buffer as soon as the listener returns: the evidence must not change
    part[:] = 0
    ref[:] = 0
    wait_for(lambda: rec.counts["written"] == 1)
    assert set(rec.kinds(v.result_id)) == {"image", "heat", "thumb"}
    # capture time keeps the frame, the thumbnail and the record: the overlays come on demand
    assert not (tmp_path / "ev" / f"{v.result_id}.jpg").exists()
    assert not (tmp_path / "ev" / f"{v.result_id}.heat.jpg").exists()
    image = cv2.imread(str(rec.path_for(v.result_id, "image")))
    assert image.shape == (120, 160, 3)
    assert image[50, 40].tolist() == [255, 255, 255]  # the copied frame, not the zeroed buffer
    assert image[30, 20].tolist()[2] > 200 and image[30, 20].tolist()[0] < 80  # red box (BGR)
    heat = cv2.imread(str(rec.path_for(v.result_id, "heat")))
    hot, cold = heat[45:55, 35:45].astype(int), heat[90:110, 100:140].astype(int)
    assert (hot[..., 2] - hot[..., 0]).mean() > 60  # the difference: the bright (yellow) end of the colour map
    assert abs(cold[..., 0] - cold[..., 2]).mean() < 10  # no difference: the part itself, grey
    thumb = cv2.imread(str(rec.path_for(v.result_id, "thumb")))
    assert thumb.shape[1] == 160  # never wider than the frame
    rec.close()
    assert rec.counts["rendered"] == 2 and (tmp_path / "ev" / f"{v.result_id}.heat.jpg").is_file()  # cached
    assert store.evidence(v.result_id)["files"]["frame"].startswith(v.result_id)  # type: ignore[index]
    store.close()


def test_pass_is_sampled_and_reference_comes_from_the_camera_table(tmp_path: Path) -> None:
    ref = board(2)
    cfg = EvidenceConfig(enabled=True, pass_sample=0.25, min_free_mb=0, format="png")
    rec = EvidenceRecorder(cfg, tmp_path, references_for=lambda cam: ref if cam == "cam" else None)
    rec.start()
    vs = [verdict(VerdictKind.PASS, i) for i in range(8)]
    for i, v in enumerate(vs):
        rec(v, frame(ref.copy(), None, i))
    wait_for(lambda: rec.counts["written"] == 2)
    rec.close()
    assert rec.counts["sampled_out"] == 6
    kept = [v.result_id for v in vs if rec.path_for(v.result_id) is not None]
    assert len(kept) == 2 and rec.path_for(kept[0], "image").suffix == ".png"  # type: ignore[union-attr]
    assert rec.path_for(kept[0], "heat") is not None  # fixed reference of the camera


def test_full_pool_skips_and_counts_without_waiting(tmp_path: Path) -> None:
    cfg = EvidenceConfig(enabled=True, pool_slots=2, min_free_mb=0)
    rec = EvidenceRecorder(cfg, tmp_path)
    rec.start()
    gate = threading.Event()
    original = rec._encode

    def slow(*a: object) -> None:
        gate.wait(30)
        original(*a)  # type: ignore[arg-type]

    rec._encode = slow  # type: ignore[method-assign]
    t = time.monotonic()
    for i in range(10):
        rec(verdict(VerdictKind.REJECT, i), frame(board(i), None, i))
    assert time.monotonic() - t < 2.0
    assert rec.counts["taken"] == 2 and rec.counts["skipped_pool_full"] == 8
    gate.set()
    wait_for(lambda: rec.counts["written"] == 2)
    rec(verdict(VerdictKind.REJECT, 11), frame(board(11), None, 11))  # slots came back
    wait_for(lambda: rec.counts["written"] == 3)
    rec.close()


def test_too_large_frame_is_skipped(tmp_path: Path) -> None:
    rec = EvidenceRecorder(EvidenceConfig(enabled=True, max_frame_mb=0.01, min_free_mb=0), tmp_path)
    rec.start()
    rec(verdict(VerdictKind.REJECT), frame(board()))  # 19200 bytes > 10 KiB
    rec.close()
    assert rec.counts["skipped_too_large"] == 1 and rec.counts["taken"] == 0


def test_retention_by_count_and_age_and_rescan(tmp_path: Path) -> None:
    cfg = EvidenceConfig(enabled=True, max_items=3, min_free_mb=0, max_age_days=1)
    rec = EvidenceRecorder(cfg, tmp_path)
    rec.start()
    old = verdict(VerdictKind.REJECT, 0, wall_ns=time.time_ns() - 3 * 86400 * 10**9)
    rec(old, frame(board(0)))
    wait_for(lambda: rec.counts["written"] == 1)
    assert rec.path_for(old.result_id) is None  # older than max_age_days: deleted at once
    vs = [verdict(VerdictKind.REJECT, i) for i in range(1, 6)]
    for v in vs:
        rec(v, frame(board(v.frame_id)))
        wait_for(lambda n=v.frame_id: rec.counts["written"] == n + 1)
    rec.close()
    assert [rec.path_for(v.result_id) is not None for v in vs] == [False, False, True, True, True]
    assert rec.health()["kept"] == 3 and rec.counts["deleted"] == 3
    again = EvidenceRecorder(EvidenceConfig(enabled=True, max_items=2, min_free_mb=0), tmp_path)
    again.start()  # the files of the earlier run are found and retention applies to them
    again.close()
    assert [again.path_for(v.result_id) is not None for v in vs] == [False, False, False, True, True]


def test_free_disk_retention(tmp_path: Path) -> None:
    rec = EvidenceRecorder(EvidenceConfig(enabled=True, min_free_mb=1e12), tmp_path)  # never enough space
    rec.start()
    vs = [verdict(VerdictKind.REJECT, i) for i in range(3)]
    for v in vs:
        rec(v, frame(board(v.frame_id)))
        wait_for(lambda n=v.frame_id: rec.counts["written"] == n + 1)
    rec.close()
    assert [rec.path_for(v.result_id) is not None for v in vs] == [False, False, True]  # the newest stays


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "/etc/passwd", "..", "", "0000000000000000-0000-0000000g", "x" * 2000, "a/b", "%2e%2e"],
)
def test_ids_that_are_not_result_ids_never_make_a_path(tmp_path: Path, bad: str) -> None:
    rec = EvidenceRecorder(EvidenceConfig(enabled=True), tmp_path)
    assert rec.path_for(bad) is None
    assert rec.path_for("0000000000000000-0000-00000000", "../x") is None


def test_overlays_are_rendered_once_on_request_and_references_stored_once(tmp_path: Path) -> None:
    rec = EvidenceRecorder(EvidenceConfig(enabled=True, min_free_mb=0, max_items=3), tmp_path)
    rec.start()
    ref = np.tile(np.linspace(40, 120, 160, dtype=np.uint8), (120, 1))
    vs = [verdict(VerdictKind.REJECT, i) for i in range(3)]
    for v in vs:
        part = ref.copy()
        part[30:70, 20:60] = 255
        rec(v, frame(part, ref.copy(), v.frame_id))  # the same reference content each time
    wait_for(lambda: rec.counts["written"] == 3)
    refs = list((tmp_path / "refs").iterdir())
    assert len(refs) == 1 and rec.counts["references"] == 1  # one file per distinct reference
    heat = rec.path_for(vs[0].result_id, "heat")
    assert heat is not None and rec.counts["rendered"] == 1
    mtime = heat.stat().st_mtime_ns
    assert rec.path_for(vs[0].result_id, "heat") == heat and heat.stat().st_mtime_ns == mtime  # from the cache
    assert rec.counts["rendered"] == 1
    # a frame without a reference: image and thumbnail, no heat map
    plain = verdict(VerdictKind.REJECT, 9)
    rec(plain, frame(board(9), None, 9))
    wait_for(lambda: rec.counts["written"] == 4)
    assert rec.kinds(plain.result_id) == ["image", "thumb"] and rec.path_for(plain.result_id, "heat") is None
    # retention: the reference goes with the last verdict that used it, and every file of a verdict
    for i in range(10, 13):
        rec(verdict(VerdictKind.REJECT, i), frame(board(i), None, i))
        wait_for(lambda n=i: rec.counts["written"] == n - 5)
    rec.close()
    assert not list((tmp_path / "refs").iterdir())
    assert not list(tmp_path.glob(f"{vs[0].result_id}*"))


def test_a_cameras_immutable_reference_is_held_not_copied_and_hashed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay camera's per-image references are read-only arrays of its own: the listener holds
    them instead of copying them, and the encoder hashes each once, then knows it by identity. A
    read-only *view* (of a buffer the camera may reuse) is still copied."""
    rec = EvidenceRecorder(EvidenceConfig(enabled=True, min_free_mb=0), tmp_path)
    rec.start()
    ref = np.tile(np.linspace(40, 120, 160, dtype=np.uint8), (120, 1)).copy()  # owns its memory
    ref.flags.writeable = False
    part = ref.copy()
    part[30:70, 20:60] = 255
    vs = [verdict(VerdictKind.REJECT, i) for i in range(4)]
    for v in vs:
        rec(v, frame(part, ref, v.frame_id))
    wait_for(lambda: rec.counts["written"] == 4)
    known = [k[0] for k in rec._fixed_refs.values()]
    assert len(known) == 1 and known[0] is ref  # one identity, hashed once
    assert rec.counts["references"] == 1 and len(list((tmp_path / "refs").iterdir())) == 1
    heat = rec.path_for(vs[3].result_id, "heat")
    assert heat is not None
    back = cv2.imread(str(next((tmp_path / "refs").iterdir())), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(back, ref)
    # a read-only view of a buffer that changes after the listener returns: copied, so the kept
    # reference is what the frame was judged against
    buffer = ref.copy()
    view = buffer[:, :]
    view.flags.writeable = False
    late = verdict(VerdictKind.REJECT, 9)
    rec(late, frame(part, view, 9))
    buffer[:] = 7
    wait_for(lambda: rec.counts["written"] == 5)
    assert len(rec._fixed_refs) == 1  # the view was not taken for a camera's own reference
    assert rec.counts["references"] == 1  # same content as `ref`: the same reference file
    # a camera that makes a new immutable reference per frame: the ones known by identity stay
    # bounded (count and bytes), so they are not kept alive here
    monkeypatch.setattr("edge.evidence.FIXED_REFS_KNOWN", 3)
    for i in range(20, 26):
        fresh = ref.copy()
        fresh.flags.writeable = False
        rec(verdict(VerdictKind.REJECT, i), frame(part, fresh, i))
        wait_for(lambda n=i: rec.counts["written"] == n - 14)
    rec.close()
    assert len(rec._fixed_refs) == 3
    assert rec.counts["references"] == 1  # all the same content


def test_rgb_frames_keep_colour_and_compare_the_first_channel(tmp_path: Path) -> None:
    rec = EvidenceRecorder(EvidenceConfig(enabled=True, min_free_mb=0, format="png"), tmp_path)
    rec.start()
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order
    ref = np.full((40, 50), 200, np.uint8)  # the first (red) channel matches: no difference anywhere
    v = verdict(VerdictKind.FAILSAFE)
    f = Frame(array=rgb, frame_id=0, part_id="p0", camera="cam", captured_ns=0, reference=ref, channel_order="RGB")
    rec(v, f)
    wait_for(lambda: rec.counts["written"] == 1)
    image = cv2.imread(str(rec.path_for(v.result_id, "image")))
    assert image[5, 5].tolist() == [0, 0, 200]  # BGR on disk
    heat = cv2.imread(str(rec.path_for(v.result_id, "heat")))
    assert abs(heat[..., 0].astype(int) - heat[..., 2]).max() < 10  # grey everywhere: no difference
    rec.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE") or not _can_leave_idle(10), reason="needs SCHED_IDLE and leave")
def test_encoder_is_sched_idle_while_the_pool_has_room_and_normal_when_it_fills(tmp_path: Path) -> None:
    rec = EvidenceRecorder(EvidenceConfig(enabled=True, pool_slots=4, min_free_mb=0, encoder_idle=True), tmp_path)
    rec.start()
    gate = threading.Event()
    policies: list[int] = []
    original = rec._encode

    def watched(*a: object) -> None:
        policies.append(os.sched_getscheduler(threading.get_native_id()))
        if len(policies) == 1:
            gate.wait(30)
        original(*a)  # type: ignore[arg-type]

    rec._encode = watched  # type: ignore[method-assign]
    rec(verdict(VerdictKind.REJECT, 0), frame(board(0), None, 0))
    wait_for(lambda: len(policies) == 1)
    for i in range(1, 4):  # the pool fills while the encoder is busy
        rec(verdict(VerdictKind.REJECT, i), frame(board(i), None, i))
    gate.set()
    wait_for(lambda: rec.counts["written"] == 4)
    rec.close()
    assert policies[0] == os.SCHED_IDLE and policies[1] == os.SCHED_OTHER  # the backlog gets normal CPU time
    assert rec.counts["skipped_pool_full"] == 0
