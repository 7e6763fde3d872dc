"""Frames the service cannot trust are FAILSAFE with their cause, never PASS; bad files do not stop a line.

Each case is a defect of issue 13 reproduced through the real service (replay camera, shipped
model, ONNX Runtime): a truncated JPEG of a defective board, a 500-byte stub and a 10x10 image
were judged PASS; undecodable files in cached mode were skipped without a verdict; an
undecodable first image or a missing reference stopped the line in "camera lost, reconnecting".
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.verdict import FailsafeReason, Verdict, VerdictKind
from tests.reliability.conftest import (
    DEMO_IMAGES,
    DEMO_REFERENCES,
    REFERENCE_MODEL,
    board_image,
    defective_board,
    run_service,
    service_config,
)


def _message(v: Verdict) -> str:
    return "; ".join(r.message for r in v.reasons)


def _corrupt_line(folder: Path) -> dict[str, str]:
    """a: a defective board, b: it truncated, c: a 500-byte stub, d: 10x10, e: blank, f: a good board."""
    folder.mkdir(parents=True)
    src = defective_board()
    shutil.copy(src, folder / "a.jpg")
    data = src.read_bytes()
    (folder / "b.jpg").write_bytes(data[: int(len(data) * 0.6)])
    (folder / "c.jpg").write_bytes(data[:500])
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "d.png"), rng.integers(0, 256, (10, 10), dtype=np.uint8))
    cv2.imwrite(str(folder / "e.png"), np.zeros_like(board_image()))
    shutil.copy(sorted(DEMO_IMAGES.glob("*_temp.jpg"))[0], folder / "f.jpg")
    return {"b": "truncated JPEG", "c": "c.jpg", "d": "10x10 px", "e": "blank (mean 0.0, std 0.0)"}


def assert_exactly_once(summary: dict[str, object], verdicts: list[Verdict]) -> None:
    per = Counter((v.camera, v.frame_id) for v in verdicts)
    assert set(per.values()) == {1}, "a frame got more than one verdict"
    counts = summary["verdicts"]
    assert isinstance(counts, dict)
    assert len(per) == summary["frames_in"] == sum(counts.values())


@pytest.mark.parametrize("mode", ["cached", "pool"])
def test_corrupt_frames_are_failsafe_with_their_cause_and_the_line_goes_on(tmp_path: Path, mode: str) -> None:
    expect = _corrupt_line(tmp_path / "line")
    cfg = service_config(tmp_path, {"path": str(tmp_path / "line"), "mode": mode, "labels": "none"})
    summary, verdicts = run_service(cfg, max_frames=12)  # two passes over the six parts
    assert_exactly_once(summary, verdicts)
    assert summary["frames_in"] == 12
    by_part: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_part.setdefault(v.part_id.split("#")[0], []).append(v)
    assert sorted(by_part) == ["a", "b", "c", "d", "e", "f"] and all(len(vs) == 2 for vs in by_part.values())
    for part, words in expect.items():
        for v in by_part[part]:
            assert v.verdict is VerdictKind.FAILSAFE, (part, v.verdict, _message(v))
            assert words in _message(v), (part, _message(v))
    for v in by_part["b"] + by_part["c"]:
        assert f"{v.part_id.split('#')[0]}.jpg" in _message(v)  # the file is named
    for part in ("b", "c", "d", "e"):  # the image cannot be trusted: invalid_frame, with its cause
        for v in by_part[part]:
            assert v.failsafe_reason is FailsafeReason.INVALID_FRAME, (part, v.failsafe_reason)
            assert _message(v).startswith("invalid_frame: "), _message(v)
    for part in ("a", "f"):  # the good files are judged as before
        assert all(v.verdict is not VerdictKind.FAILSAFE for v in by_part[part]), part
    assert all(v.verdict is VerdictKind.REJECT for v in by_part["a"])  # the defective board is found


def test_an_undecodable_first_image_is_one_failsafe_not_an_endless_reconnect(tmp_path: Path) -> None:
    line = tmp_path / "line"
    line.mkdir()
    (line / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for i, f in enumerate(sorted(DEMO_IMAGES.glob("*.jpg"))[:3]):
        shutil.copy(f, line / f"b{i}.jpg")
    cfg = service_config(tmp_path, {"path": str(line), "loop": False, "labels": "none"})
    t0 = time.monotonic()
    summary, verdicts = run_service(cfg, max_frames=None, seconds=120)
    assert time.monotonic() - t0 < 100, "the line did not end on its own"
    assert_exactly_once(summary, verdicts)
    assert summary["frames_in"] == 4
    first = min(verdicts, key=lambda v: v.frame_id)
    assert first.verdict is VerdictKind.FAILSAFE and "a.jpg" in _message(first)
    assert sum(v.verdict is VerdictKind.FAILSAFE for v in verdicts) == 1


def test_a_missing_reference_is_a_failsafe_for_that_part(tmp_path: Path) -> None:
    line, refs = tmp_path / "line", tmp_path / "refs"
    shutil.copytree(DEMO_REFERENCES, refs)
    boards = sorted(DEMO_IMAGES.glob("*_test.jpg"))[:3]
    line.mkdir()
    for f in boards:
        shutil.copy(f, line / f.name)
    gone = refs / (boards[1].name.replace("_test.jpg", ".jpg"))
    gone.unlink()
    cfg = service_config(
        tmp_path,
        {"path": str(line), "references": str(refs), "loop": False, "labels": "none"},
        model=REFERENCE_MODEL,
    )
    summary, verdicts = run_service(cfg, max_frames=None, seconds=120)
    assert_exactly_once(summary, verdicts)
    assert summary["frames_in"] == 3
    bad = [v for v in verdicts if v.verdict is VerdictKind.FAILSAFE]
    assert len(bad) == 1 and boards[1].stem in bad[0].part_id and "no reference" in _message(bad[0])
    assert bad[0].failsafe_reason is FailsafeReason.INVALID_FRAME


def test_a_references_path_that_is_no_folder_stops_with_a_clear_error(tmp_path: Path) -> None:
    line = tmp_path / "line"
    line.mkdir()
    shutil.copy(defective_board(), line / "a.jpg")
    cfg = service_config(
        tmp_path, {"path": str(line), "references": str(tmp_path / "nope"), "labels": "none"}, model=REFERENCE_MODEL
    )
    t0 = time.monotonic()
    summary, verdicts = run_service(cfg, max_frames=None, seconds=120)
    assert time.monotonic() - t0 < 100, "a permanent camera error must not be retried forever"
    assert summary["frames_in"] == 0 and not verdicts
    assert any("references" in e and "is not a folder" in e for e in summary.get("errors", []))


def test_a_reference_of_another_size_is_an_invalid_frame_not_an_engine_error(tmp_path: Path) -> None:
    line, refs = tmp_path / "line", tmp_path / "refs"
    board = defective_board()
    line.mkdir()
    refs.mkdir()
    shutil.copy(board, line / board.name)
    ref = cv2.imread(str(DEMO_REFERENCES / board.name.replace("_test.jpg", ".jpg")), cv2.IMREAD_GRAYSCALE)
    assert ref is not None
    cv2.imwrite(str(refs / board.name.replace("_test.jpg", ".png")), cv2.resize(ref, (320, 320)))
    cfg = service_config(
        tmp_path, {"path": str(line), "references": str(refs), "labels": "none"}, model=REFERENCE_MODEL
    )
    service_summary, verdicts = run_service(cfg, max_frames=3)
    assert_exactly_once(service_summary, verdicts)
    assert all(v.failsafe_reason is FailsafeReason.INVALID_FRAME for v in verdicts)
    assert "reference" in _message(verdicts[0])
    assert service_summary["failsafe_reasons"] == {"invalid_frame": 3}  # no engine_error
