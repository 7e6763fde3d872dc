"""Replay camera: caching and zero-copy views, pacing, looping, labels, pool mode, video, loss."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from cameras.base import Camera, Frame
from cameras.replay import ReplayCamera, ReplayCameraConfig
from edge.errors import CameraError, CameraLostError
from edge.registry import camera_registry

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DEEPPCB = SHARED / "datasets" / "deeppcb"


def _img(path: Path, value: int, shape: tuple[int, ...] = (48, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def _folder(root: Path, n: int = 3, shape: tuple[int, ...] = (48, 64)) -> Path:
    for i in range(n):
        _img(root / f"p{i}.png", 40 * i + 10, shape)
    return root


def _camera(path: Path, **kw: Any) -> ReplayCamera:
    kw.setdefault("rate_ppm", 0)
    return ReplayCameraConfig(path=str(path), **kw).build(path.parent)


@pytest.fixture
def opened() -> Iterator[list[ReplayCamera]]:
    cams: list[ReplayCamera] = []
    yield cams
    for c in cams:
        c.close()


def _open(cams: list[ReplayCamera], cam: ReplayCamera) -> ReplayCamera:
    cams.append(cam)
    cam.open()
    return cam


def _take(cam: ReplayCamera, n: int, release: bool = True) -> list[Frame]:
    out: list[Frame] = []
    gen = cam.frames()
    for f in gen:
        out.append(f)
        if release:
            cam.release(f)
        if len(out) == n:
            break
    gen.close()
    return out


# -- config ----------------------------------------------------------------------------------
def test_registry_builds_the_replay_config_and_resolves_paths_against_the_config_folder(tmp_path: Path) -> None:
    _folder(tmp_path / "imgs")
    cfg = camera_registry().validate({"type": "replay", "path": "imgs", "labels_dir": "lbl"})
    assert isinstance(cfg, ReplayCameraConfig)
    cam = cfg.build(tmp_path)
    assert isinstance(cam, Camera)
    assert cam.path == tmp_path / "imgs"
    assert cam.labels_dir == tmp_path / "lbl"
    with pytest.raises(ValidationError):
        ReplayCameraConfig(path="x", unknown_field=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ReplayCameraConfig(path="x", rate_ppm=-1)


# -- cached mode: zero copy, read-only ---------------------------------------------------------
def test_cached_frames_are_read_only_views_on_the_decoded_cache(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    cam = _open(opened, _camera(_folder(tmp_path / "imgs")))
    assert cam.mode == "cached"
    frames = _take(cam, 6, release=False)  # two loops over 3 images, all held at once
    assert [f.part_id for f in frames] == ["p0", "p1", "p2", "p0#1", "p1#1", "p2#1"]
    for i, f in enumerate(frames):
        assert not f.array.flags.writeable
        assert np.shares_memory(f.array, cam._images[i % 3])
        assert f.array.shape == (48, 64)
        assert int(f.array[0, 0]) == 40 * (i % 3) + 10
        assert f.truth is None and f.error is None
    assert np.shares_memory(frames[0].array, frames[3].array)  # one image, two frames in flight
    with pytest.raises(ValueError):
        frames[0].array[0, 0] = 1
    assert [f.frame_id for f in frames] == list(range(6))
    h = cam.health()
    assert h["held"] == 6 and h["frames_delivered"] == 6 and h["connected"]
    for f in frames:
        cam.release(f)
    cam.release(frames[0])
    h = cam.health()
    assert h["held"] == 0 and h["double_releases"] == 1


def test_channels_follow_the_file_unless_grayscale_is_set(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    _img(tmp_path / "mono" / "a.png", 100)
    color = np.zeros((10, 12, 3), np.uint8)
    color[..., 2] = 200  # red in BGR
    (tmp_path / "color").mkdir()
    cv2.imwrite(str(tmp_path / "color" / "b.png"), color)
    assert _take(_open(opened, _camera(tmp_path / "mono")), 1)[0].array.shape == (48, 64)
    (f,) = _take(_open(opened, _camera(tmp_path / "color")), 1)
    assert f.array.shape == (10, 12, 3) and f.channel_order == "BGR" and int(f.array[0, 0, 2]) == 200
    assert _take(_open(opened, _camera(tmp_path / "color", grayscale=True)), 1)[0].array.shape == (10, 12)
    assert _take(_open(opened, _camera(tmp_path / "mono", grayscale=False)), 1)[0].array.shape == (48, 64, 3)


def test_recursive_folders_sorted_by_relative_path(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    _img(tmp_path / "r" / "b" / "x.png", 1)
    _img(tmp_path / "r" / "a" / "y.png", 2)
    _img(tmp_path / "r" / "c.png", 3)
    (tmp_path / "r" / "notes.txt").write_text("not an image")
    flat = _open(opened, _camera(tmp_path / "r", loop=False))
    assert [f.part_id for f in _take(flat, 10)] == ["c"]
    deep = _open(opened, _camera(tmp_path / "r", recursive=True, loop=False))
    assert [f.part_id for f in _take(deep, 10)] == ["y", "x", "c"]


# -- pacing, looping, max_frames -----------------------------------------------------------------
def test_pacing_holds_the_rate_within_ten_percent(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    cam = _open(opened, _camera(_folder(tmp_path / "imgs"), rate_ppm=1200))  # 20 parts/s
    stamps = [f.captured_ns for f in _take(cam, 11)]
    elapsed = (stamps[-1] - stamps[0]) / 1e9
    assert elapsed == pytest.approx(0.5, rel=0.10)
    # absolute schedule: no frame arrives before its slot
    assert all((b - stamps[0]) / 1e9 >= i * 0.05 - 0.002 for i, b in enumerate(stamps))


def test_loop_false_ends_and_max_frames_stops(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    src = _folder(tmp_path / "imgs")
    once = _open(opened, _camera(src, loop=False))
    assert [f.part_id for f in _take(once, 100)] == ["p0", "p1", "p2"]
    capped = _open(opened, _camera(src, max_frames=7))
    parts = [f.part_id for f in _take(capped, 100)]
    assert parts == ["p0", "p1", "p2", "p0#1", "p1#1", "p2#1", "p0#2"]
    assert capped.health()["loops"] == 2


def test_close_from_another_thread_interrupts_a_paced_wait(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    cam = _open(opened, _camera(_folder(tmp_path / "imgs"), rate_ppm=1))  # one part a minute
    got: list[Frame] = []
    done = threading.Event()

    def run() -> None:
        for f in cam.frames():
            got.append(f)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.3)
    assert len(got) == 1 and not done.is_set()
    t0 = time.monotonic()
    cam.close()
    assert done.wait(2.0) and time.monotonic() - t0 < 2.0


# -- labels --------------------------------------------------------------------------------------
def test_yolo_labels_ultralytics_layout_missing_txt_is_a_good_part(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    root = tmp_path / "ds"
    _img(root / "images" / "a.png", 10, (100, 200))
    _img(root / "images" / "b.png", 10, (100, 200))
    _img(root / "images" / "c.png", 10, (100, 200))
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.2\n")
    (root / "labels" / "b.txt").write_text("")
    cam = _open(opened, _camera(root / "images", loop=False))
    assert cam.label_format == "yolo"
    a, b, c = _take(cam, 3)
    assert a.truth is not None and a.truth.boxes == ((1, 50.0, 40.0, 150.0, 60.0),) and a.truth.defective
    assert b.truth is not None and b.truth.boxes == () and not b.truth.defective
    assert c.truth is not None and c.truth.boxes == ()  # missing txt in a labelled set


def test_yolo_labels_next_to_images_and_in_labels_dir(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    _img(tmp_path / "side" / "a.png", 10, (10, 10))
    (tmp_path / "side" / "a.txt").write_text("0 0.5 0.5 1 1\n")
    (a,) = _take(_open(opened, _camera(tmp_path / "side", labels="yolo")), 1)
    assert a.truth is not None and a.truth.boxes == ((0, 0.0, 0.0, 10.0, 10.0),)
    _img(tmp_path / "pics" / "z.png", 10, (10, 20))
    (tmp_path / "lbl").mkdir()
    (tmp_path / "lbl" / "z.txt").write_text("2 0.5 0.5 0.5 0.5\n")
    (z,) = _take(_open(opened, _camera(tmp_path / "pics", labels_dir=str(tmp_path / "lbl"))), 1)
    assert z.truth is not None and z.truth.boxes == ((2, 5.0, 2.5, 15.0, 7.5),)


def test_a_missing_labels_dir_is_a_config_error(tmp_path: Path) -> None:
    cam = _camera(_folder(tmp_path / "imgs"), labels_dir=str(tmp_path / "nope"))
    with pytest.raises(CameraError, match="labels_dir"):
        cam.open()


def test_no_labels_means_no_truth(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    src = _folder(tmp_path / "imgs")
    assert _take(_open(opened, _camera(src)), 1)[0].truth is None  # auto, nothing found
    (src / "p0.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert _take(_open(opened, _camera(src, labels="none")), 1)[0].truth is None


def test_yolo_class_names_bound_the_classes(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    _img(tmp_path / "s" / "a.png", 10, (10, 10))
    (tmp_path / "s" / "a.txt").write_text("3 0.5 0.5 1 1\n")
    cam = _camera(tmp_path / "s", labels="yolo", class_names=["a", "b"])
    opened.append(cam)
    with pytest.raises(CameraError, match="class 3 out of range"):
        cam.open()


def _deeppcb_root(root: Path) -> Path:
    """A two-pair DeepPCB root in the released layout (images/, annotations/, list.txt)."""
    lines = []
    for n, boxes in (("100001", "10 20 30 40 3\n50,60,70,80,6\n"), ("100002", "")):
        _img(root / "images" / "group1" / "100" / f"{n}_test.jpg", 200, (64, 64))
        _img(root / "images" / "group1" / "100" / f"{n}_temp.jpg", 100, (64, 64))
        ann = root / "annotations" / "group1" / "100_not" / f"{n}.txt"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(boxes)
        lines.append(f"group1/100/{n}.jpg group1/100_not/{n}.txt")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def test_deeppcb_root_replays_tests_with_annotations_and_templates_as_good(
    tmp_path: Path, opened: list[ReplayCamera]
) -> None:
    root = _deeppcb_root(tmp_path / "deeppcb")
    cam = _open(opened, _camera(root, loop=False))
    assert cam.label_format == "deeppcb-root"
    assert cam.class_names is not None and len(cam.class_names) == 6
    frames = _take(cam, 10)
    assert [f.part_id for f in frames] == ["100001_test", "100001_temp", "100002_test", "100002_temp"]
    t1 = frames[0].truth
    assert t1 is not None and t1.boxes == ((2, 10.0, 20.0, 30.0, 40.0), (5, 50.0, 60.0, 70.0, 80.0))
    assert frames[0].array.shape == (64, 64)  # 1-channel JPEG stays mono
    for f in frames[1:]:
        assert f.truth is not None and not f.truth.defective
    only_tests = _open(opened, _camera(root, loop=False, deeppcb_images="test"))
    assert [f.part_id for f in _take(only_tests, 10)] == ["100001_test", "100002_test"]


def test_deeppcb_sub_folder_finds_annotations_by_name(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    root = _deeppcb_root(tmp_path / "deeppcb")
    cam = _open(opened, _camera(root / "images" / "group1" / "100", loop=False))
    assert cam.label_format == "deeppcb"
    frames = {f.part_id: f for f in _take(cam, 10)}
    assert set(frames) == {"100001_temp", "100001_test", "100002_temp", "100002_test"}
    t = frames["100001_test"].truth
    assert t is not None and len(t.boxes) == 2
    assert frames["100001_temp"].truth is not None and not frames["100001_temp"].truth.defective


@pytest.mark.skipif(not (DEEPPCB / "list.txt").is_file(), reason="shared DeepPCB dataset not present")
def test_real_deeppcb_root(opened: list[ReplayCamera]) -> None:
    root = DEEPPCB.resolve()
    # pool mode: decodes per frame, so the test does not cache 2000 images
    cam = _open(opened, ReplayCameraConfig(path=str(root), rate_ppm=0, mode="pool", pool_size=2).build(root))
    assert cam.label_format == "deeppcb-root" and cam.health()["items"] == 2000
    first_line = (root / "list.txt").read_text().splitlines()[0].split()
    expected = (root / "annotations" / first_line[1]).read_text().strip().splitlines()
    test, temp = _take(cam, 2)
    assert test.part_id.endswith("_test") and temp.part_id.endswith("_temp")
    assert test.array.shape == (640, 640) and test.array.dtype == np.uint8
    assert test.truth is not None and len(test.truth.boxes) == len(expected)
    assert temp.truth is not None and temp.truth.boxes == ()


# -- pool mode -----------------------------------------------------------------------------------
def test_pool_buffers_are_reused_only_after_release(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    src = _folder(tmp_path / "imgs", 4)
    cam = _open(opened, _camera(src, mode="pool", pool_size=2, rate_ppm=6000, pool_wait_s=0.2))
    gen = cam.frames()
    a, b = next(gen), next(gen)
    assert not np.shares_memory(a.array, b.array)
    assert not a.array.flags.writeable
    t0 = time.monotonic()
    c = next(gen)  # both buffers held: after pool_wait_s an error frame stands for the part
    assert time.monotonic() - t0 >= 0.15
    assert c.error is not None and "no free" in c.error and c.array.size == 0
    assert cam.health()["frames_dropped"] == 1
    cam.release(c)
    a_value = int(a.array[0, 0])
    cam.release(a)
    d = next(gen)
    assert d.error is None and np.shares_memory(d.array, a.array)  # the released buffer, reused
    assert int(b.array[0, 0]) == 50 and a_value == 10  # the held one was never touched
    assert int(d.array[0, 0]) == 130
    gen.close()


def test_cache_limit_refuses_cached_mode_and_auto_falls_back_to_pool(
    tmp_path: Path, opened: list[ReplayCamera]
) -> None:
    src = _folder(tmp_path / "big", 2, shape=(600, 1000, 3))  # 1.8 MB each
    cam = _camera(src, mode="cached", max_cache_mb=1)
    opened.append(cam)
    with pytest.raises(CameraError, match="max_cache_mb"):
        cam.open()
    auto = _open(opened, _camera(src, max_cache_mb=1))
    assert auto.mode == "pool"
    frames = _take(auto, 3)
    assert frames[0].array.shape == (600, 1000, 3) and frames[2].part_id == "p0#1"


# -- video ---------------------------------------------------------------------------------------
def _video(path: Path, n: int = 10) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((48, 64, 3), 20 * i + 10, np.uint8))
    w.release()
    return path


def test_video_plays_into_pool_buffers_and_loops(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    video = _video(tmp_path / "clip.avi")
    once = _open(opened, _camera(video, loop=False, pool_size=3))
    assert once.mode == "pool"
    frames: list[Frame] = []
    levels: list[int] = []
    for f in once.frames():
        levels.append(round((float(f.array.mean()) - 10) / 20))  # read before release
        frames.append(f)
        once.release(f)
    assert levels == list(range(10))
    assert frames[0].array.shape == (48, 64, 3) and frames[3].part_id == "clip-3"
    assert np.shares_memory(frames[0].array, frames[3].array)  # released at once: the same pool buffer again
    looped = _open(opened, _camera(video, max_frames=13, grayscale=True))
    frames = _take(looped, 100)
    assert len(frames) == 13 and frames[10].part_id == "clip-0#1" and frames[10].array.shape == (48, 64)


# -- the source going away -------------------------------------------------------------------
def test_missing_source_is_lost_but_an_empty_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(CameraLostError):
        _camera(tmp_path / "nope").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError) as err:
        _camera(tmp_path / "empty").open()
    assert not isinstance(err.value, CameraLostError)


def test_source_vanishing_raises_lost_and_reopen_continues_after_it_returns(
    tmp_path: Path, opened: list[ReplayCamera]
) -> None:
    src = _folder(tmp_path / "imgs")
    cam = _open(opened, _camera(src, rate_ppm=3000, check_source_every_s=0.05))
    before = _take(cam, 2)
    gen = cam.frames()
    next(gen)
    shutil.move(str(src), str(tmp_path / "away"))
    with pytest.raises(CameraLostError, match="vanished"):
        for _ in range(200):
            cam.release(next(gen))
    cam.close()
    with pytest.raises(CameraLostError):
        cam.open()
    shutil.move(str(tmp_path / "away"), str(src))
    cam.open()
    after = _take(cam, 3)
    assert after[0].frame_id > before[-1].frame_id  # frame ids never repeat over a reconnect
    assert cam.health()["connected"]


def test_release_after_close_is_a_counted_no_op(tmp_path: Path, opened: list[ReplayCamera]) -> None:
    cam = _open(opened, _camera(_folder(tmp_path / "imgs"), mode="pool", pool_size=2))
    (held,) = _take(cam, 1, release=False)
    cam.close()
    assert int(held.array[0, 0]) == 10  # still readable
    cam.release(held)
    cam.release(held)
    assert cam.health()["double_releases"] == 1
    assert cam._held.late_releases == 1


def test_max_in_flight_paces_the_camera_by_releases(tmp_path: Path) -> None:
    import threading

    import cv2
    import numpy as np

    from cameras.replay import ReplayCameraConfig

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8), i, np.uint8))
    cam = ReplayCameraConfig(path=str(tmp_path), rate_ppm=0, max_in_flight=2).build(tmp_path)
    cam.open()
    gen = cam.frames()
    held = [next(gen), next(gen)]
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(next(gen)), daemon=True)
    t.start()
    t.join(0.3)
    assert not got, "the camera ran ahead although two frames were held"
    cam.release(held.pop(0))
    t.join(2)
    assert got, "a release did not let the next frame through"
    for f in [*held, got[0]]:
        cam.release(f)  # type: ignore[arg-type]
    gen.close()
    cam.close()
