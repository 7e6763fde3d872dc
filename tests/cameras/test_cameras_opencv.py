"""OpenCV camera on a small MJPG video written to a temp folder: pool buffers, end/loop, loss."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from cameras.base import Camera, Frame
from cameras.opencv import OpenCVCamera, OpenCVCameraConfig
from edge.errors import CameraError, CameraLostError
from edge.registry import camera_registry

N = 12


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (64, 48))
    assert w.isOpened()
    for i in range(N):
        w.write(np.full((48, 64, 3), 20 * i + 5, np.uint8))
    w.release()
    return path


@pytest.fixture
def cams() -> Iterator[list[OpenCVCamera]]:
    out: list[OpenCVCamera] = []
    yield out
    for c in out:
        c.close()


def _cam(cams: list[OpenCVCamera], source: str | int, base: Path = Path("."), **kw: object) -> OpenCVCamera:
    kw.setdefault("realtime", False)
    cam = OpenCVCameraConfig(source=source, **kw).build(base)
    cams.append(cam)
    return cam


def _level(f: Frame) -> int:
    return round((float(f.array.mean()) - 5) / 20)


def test_config_via_registry_and_relative_file_paths(video: Path) -> None:
    cfg = camera_registry().validate({"type": "opencv", "source": "clip.avi", "backend": "FFMPEG"})
    assert isinstance(cfg, OpenCVCameraConfig)
    cam = cfg.build(video.parent)
    assert isinstance(cam, Camera) and cam.is_file and cam.source == str(video)
    assert OpenCVCameraConfig(source=0).build(Path(".")).source == 0
    assert OpenCVCameraConfig(source="rtsp://cam/stream").build(Path(".")).is_file is False
    with pytest.raises(ValidationError, match="backend"):
        OpenCVCameraConfig(source=0, backend="NOPE")
    with pytest.raises(ValidationError):
        OpenCVCameraConfig(source=0, extra=1)  # type: ignore[call-arg]


def test_file_frames_are_read_in_place_into_reused_pool_buffers(video: Path, cams: list[OpenCVCamera]) -> None:
    cam = _cam(cams, str(video), pool_size=2)
    cam.open()
    frames: list[Frame] = []
    levels: list[int] = []
    for f in cam.frames():
        assert f.array.shape == (48, 64, 3) and f.array.dtype == np.uint8
        assert not f.array.flags.writeable
        levels.append(_level(f))
        frames.append(f)
        cam.release(f)
    assert levels == list(range(N))  # the file ended the iterator after its last frame
    # released at once, the same preallocated buffer takes every frame: nothing allocated per frame
    assert all(np.shares_memory(frames[0].array, f.array) for f in frames)
    assert [f.frame_id for f in frames] == list(range(N))
    assert frames[3].part_id == f"{cam.name}-3"
    h = cam.health()
    assert h["frames_delivered"] == N and h["held"] == 0 and h["shape"] == [48, 64, 3]


def test_held_buffers_are_not_overwritten_and_a_full_pool_yields_an_error_frame(
    video: Path, cams: list[OpenCVCamera]
) -> None:
    cam = _cam(cams, str(video), pool_size=2, pool_wait_s=0.2)
    cam.open()
    gen = cam.frames()
    a, b = next(gen), next(gen)
    assert not np.shares_memory(a.array, b.array)
    t0 = time.monotonic()
    c = next(gen)
    assert time.monotonic() - t0 >= 0.15
    assert c.error is not None and c.array.size == 0
    assert cam.health()["frames_dropped"] == 1
    cam.release(c)
    cam.release(a)
    d = next(gen)
    assert d.error is None and np.shares_memory(d.array, a.array)
    assert (_level(b), _level(d)) == (1, 3)  # frame 2 was the one skipped; b untouched
    cam.release(b)
    cam.release(b)
    assert cam.health()["double_releases"] == 1
    gen.close()


def test_loop_and_grayscale(video: Path, cams: list[OpenCVCamera]) -> None:
    cam = _cam(cams, str(video), loop=True, grayscale=True, pool_size=4)
    cam.open()
    levels = []
    for f in cam.frames():
        assert f.array.shape == (48, 64)
        levels.append(_level(f))
        cam.release(f)
        if len(levels) == N + 3:
            break
    assert levels == list(range(N)) + [0, 1, 2]
    assert cam.health()["loops"] == 1


def test_close_and_reopen(video: Path, cams: list[OpenCVCamera]) -> None:
    cam = _cam(cams, str(video))
    cam.open()
    gen = cam.frames()
    held = next(gen)
    gen.close()
    cam.close()
    assert _level(held) == 0  # still readable after close
    cam.release(held)
    assert cam.health()["late_releases"] == 1 and not cam.health()["connected"]
    cam.open()
    f = next(cam.frames())
    assert _level(f) == 0 and f.frame_id == 1  # a file starts over; frame ids keep counting
    cam.release(f)


def test_missing_file_is_lost_and_a_non_video_is_a_config_error(tmp_path: Path, cams: list[OpenCVCamera]) -> None:
    with pytest.raises(CameraLostError):
        _cam(cams, str(tmp_path / "nope.avi")).open()
    junk = tmp_path / "junk.avi"
    junk.write_text("not a video")
    with pytest.raises(CameraError) as err:
        _cam(cams, str(junk)).open()
    assert not isinstance(err.value, CameraLostError)


def test_a_device_that_cannot_be_opened_is_lost(cams: list[OpenCVCamera]) -> None:
    with pytest.raises(CameraLostError):
        _cam(cams, 57).open()  # no /dev/video57


def test_a_failed_read_on_a_live_source_is_lost(video: Path, cams: list[OpenCVCamera]) -> None:
    cam = _cam(cams, str(video))
    cam.open()
    cam.is_file = False  # behave as a live stream: running out of frames is a failed read
    with pytest.raises(CameraLostError, match="read failed"):
        for f in cam.frames():
            cam.release(f)
    assert cam.health()["frames_delivered"] == N


def test_a_file_plays_at_its_own_frame_rate(video: Path, cams: list[OpenCVCamera]) -> None:
    cam = _cam(cams, str(video), realtime=True)  # written at 25 fps
    cam.open()
    stamps = []
    for f in cam.frames():
        stamps.append(f.captured_ns)
        cam.release(f)
    assert len(stamps) == N
    assert (stamps[-1] - stamps[0]) / 1e9 == pytest.approx((N - 1) / 25.0, rel=0.10)
