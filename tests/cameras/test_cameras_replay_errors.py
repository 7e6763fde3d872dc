"""Replay items that cannot be read become error frames naming the file; the line goes on.

A truncated JPEG decodes "fine" in OpenCV (grey fill), so the bytes are checked strictly
(`cameras.image_file`). A source that can never play is `CameraFatalError`, not an outage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cameras.base import Frame
from cameras.image_file import integrity_problem, read_image
from cameras.replay import ReplayCamera, ReplayCameraConfig
from edge.errors import CameraFatalError, CameraLostError, CameraSourceError


def _board(seed: int, shape: tuple[int, ...] = (64, 80)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write(path: Path, seed: int, shape: tuple[int, ...] = (64, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), _board(seed, shape))
    return path


def _truncate(path: Path, keep: float | int) -> Path:
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    return path


def _camera(path: Path, **kw: Any) -> ReplayCamera:
    kw.setdefault("rate_ppm", 0)
    kw.setdefault("labels", "none")
    return ReplayCameraConfig(path=str(path), **kw).build(path.parent)


def _play(cam: ReplayCamera, n: int) -> list[Frame]:
    out: list[Frame] = []
    gen = cam.frames()
    for f in gen:
        out.append(f)
        cam.release(f)
        if len(out) == n:
            break
    gen.close()
    return out


def test_opencv_decodes_a_truncated_jpeg_but_the_strict_reader_refuses_it(tmp_path: Path) -> None:
    good = _write(tmp_path / "a.jpg", 1, (240, 320))
    cut = _truncate(_write(tmp_path / "b.jpg", 1, (240, 320)), 0.6)
    lenient = cv2.imread(str(cut), cv2.IMREAD_GRAYSCALE)
    assert lenient is not None and lenient.shape == (240, 320)  # what the service judged before
    assert read_image(good, cv2.IMREAD_GRAYSCALE).shape == (240, 320)
    with pytest.raises(CameraSourceError, match=r"truncated JPEG \(no end-of-image marker\): .*b\.jpg"):
        read_image(cut, cv2.IMREAD_GRAYSCALE)


@pytest.mark.parametrize(
    ("name", "keep", "problem"),
    [
        ("a.png", 0.5, "truncated PNG"),
        ("a.jpg", 500, "truncated JPEG"),
        ("a.bmp", 0.7, "truncated BMP"),
        ("a.png", 0, "empty file"),
    ],
)
def test_integrity_of_cut_files(tmp_path: Path, name: str, keep: float | int, problem: str) -> None:
    path = _truncate(_write(tmp_path / name, 2, (120, 160)), keep)
    assert (integrity_problem(path.read_bytes()) or "").startswith(problem)
    with pytest.raises(CameraSourceError, match=problem):
        read_image(path, cv2.IMREAD_ANYCOLOR)


def test_missing_directory_and_garbage_are_source_errors(tmp_path: Path) -> None:
    with pytest.raises(CameraSourceError, match="file not found"):
        read_image(tmp_path / "none.png", cv2.IMREAD_ANYCOLOR)
    with pytest.raises(CameraSourceError, match="cannot read"):
        read_image(tmp_path, cv2.IMREAD_ANYCOLOR)
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    with pytest.raises(CameraSourceError, match="cannot decode"):
        read_image(tmp_path / "x.png", cv2.IMREAD_ANYCOLOR)


@pytest.mark.parametrize("mode", ["cached", "pool"])
def test_bad_items_are_error_frames_in_place_and_the_line_goes_on(tmp_path: Path, mode: str) -> None:
    src = tmp_path / "imgs"
    _write(src / "p0.jpg", 0)
    _truncate(_write(src / "p1.jpg", 1), 0.5)
    _write(src / "p2.png", 2)
    (src / "p3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a stub
    _write(src / "p4.png", 4)
    cam = _camera(src, mode=mode, pool_size=2)
    cam.open()
    try:
        frames = _play(cam, 10)  # two passes
    finally:
        cam.close()
    assert [f.part_id for f in frames[:5]] == ["p0", "p1", "p2", "p3", "p4"]
    errors = [f.error for f in frames]
    for i in (1, 3, 6, 8):
        assert errors[i] is not None and frames[i].array.size == 0
    assert "truncated JPEG" in (errors[1] or "") and "p1.jpg" in (errors[1] or "")
    assert "p3.png" in (errors[3] or "")
    assert [e is None for e in errors] == [True, False, True, False, True] * 2
    assert [f.invalid for f in frames] == [False, True, False, True, False] * 2  # the image is the problem
    h = cam.health()
    assert h["frames_incomplete"] == 4 and h["frames_delivered"] == 6
    assert h["decode_errors"] >= 2


def test_an_undecodable_first_image_does_not_stop_the_line(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    (src / "a0.jpg").parent.mkdir(parents=True)
    (src / "a0.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    _write(src / "a1.jpg", 1)
    cam = _camera(src)
    cam.open()
    try:
        frames = _play(cam, 2)
    finally:
        cam.close()
    assert frames[0].error is not None and "a0.jpg" in frames[0].error
    assert frames[1].error is None and frames[1].array.shape == (64, 80)


def test_a_set_with_no_readable_image_is_fatal_not_lost(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    _truncate(_write(src / "a.jpg", 1), 0.3)
    (src / "b.png").write_bytes(b"nope")
    with pytest.raises(CameraFatalError, match="none of the 2 images"):
        _camera(src).open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraFatalError, match="no images"):
        _camera(tmp_path / "empty").open()
    with pytest.raises(CameraLostError):
        _camera(tmp_path / "gone").open()


@pytest.mark.parametrize("mode", ["cached", "pool"])
def test_missing_or_bad_reference_is_an_error_frame_for_that_item(tmp_path: Path, mode: str) -> None:
    src, refs = tmp_path / "imgs", tmp_path / "refs"
    for i in range(3):
        _write(src / f"b{i}_test.png", i)
    _write(refs / "b0.png", 10)
    _truncate(_write(refs / "b2.png", 12), 0.5)  # b1 has none, b2's is cut
    cam = _camera(src, references=str(refs), mode=mode)
    cam.open()
    try:
        frames = _play(cam, 3)
    finally:
        cam.close()
    assert frames[0].error is None and frames[0].reference is not None
    assert frames[1].error is not None and "no reference for b1_test.png" in frames[1].error
    assert frames[2].error is not None and "reference truncated PNG" in frames[2].error and "b2.png" in frames[2].error


def test_references_that_are_not_a_folder_are_fatal(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    _write(src / "a.png", 0)
    with pytest.raises(CameraFatalError, match="references"):
        _camera(src, references=str(tmp_path / "nope")).open()


def test_a_file_that_is_no_video_is_fatal(tmp_path: Path) -> None:
    bad = tmp_path / "clip.avi"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(CameraFatalError):
        _camera(bad).open()
