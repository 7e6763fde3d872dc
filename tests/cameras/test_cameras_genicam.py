"""GenICam camera against the real GenTL simulator (Viky, bundled with the genicam wheel) via harvesters.

The simulator offers three devices (VikyTL_DEV_red/green/blue, serials 0/1/2), PixelFormat
RGBa8 (default) or Mono8, Width/Height 100..800 (default 400), AcquisitionFrameRate 1..200 Hz
(default 20), and no buffer timestamps.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import genicam
import numpy as np
import pytest
from harvesters.core import ImageAcquirer

from cameras import genicam as gc
from cameras.base import Camera, Frame
from cameras.genicam import GenICamCamera, GenICamCameraConfig
from edge.errors import CameraError, CameraFatalError, CameraLostError, CameraNodeError
from edge.registry import camera_registry


@pytest.fixture
def cams() -> Iterator[list[GenICamCamera]]:
    out: list[GenICamCamera] = []
    yield out
    for c in out:
        c.close()


def _open(cams: list[GenICamCamera], **kw: Any) -> GenICamCamera:
    cam = GenICamCameraConfig(**kw).build(Path("."))
    cams.append(cam)
    cam.open()
    return cam


def _data(frame: Frame) -> np.ndarray:
    data = frame.handle.payload.components[0].data
    assert isinstance(data, np.ndarray)
    return data


def test_bundled_cti_is_found_in_the_installed_genicam_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cti = gc.bundled_cti()
    assert cti.suffix == ".cti" and cti.is_file()
    assert cti.parent == Path(genicam.__file__).resolve().parent
    monkeypatch.setattr(genicam, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(CameraError, match="no GenTL producer"):
        gc.bundled_cti()


def test_a_missing_cti_file_is_a_config_error(tmp_path: Path) -> None:
    cam = camera_registry().validate({"type": "genicam", "cti": "nope.cti"})
    assert isinstance(cam, GenICamCameraConfig)
    built = cam.build(tmp_path)
    assert isinstance(built, Camera)
    with pytest.raises(CameraError, match="nope.cti") as err:
        built.open()
    assert not isinstance(err.value, CameraLostError)
    assert isinstance(err.value, CameraFatalError)  # permanent: the acquisition stops, it does not retry


def test_permanent_and_transient_errors_are_told_apart(cams: list[GenICamCamera]) -> None:
    with pytest.raises(CameraFatalError):  # a node the device lacks: settings it will never take
        _open(cams, node_overrides={"BouncingBallSise": 10})
    with pytest.raises(CameraLostError) as err:  # a device that is not there now: retried
        _open(cams, device="nope")
    assert not isinstance(err.value, CameraFatalError)


def test_nodes_are_written_and_frames_are_read_only_views_on_gentl_buffers(cams: list[GenICamCamera]) -> None:
    cam = _open(cams, pixel_format="Mono8", roi={"width": 320, "height": 240}, frame_rate=100.0)
    assert cam._ia is not None
    nm = cam._ia.remote_device.node_map
    assert (nm.Width.value, nm.Height.value, nm.PixelFormat.value) == (320, 240, "Mono8")
    assert nm.AcquisitionFrameRate.value == pytest.approx(100.0)
    gen = cam.frames()
    frames = [next(gen) for _ in range(3)]
    for f in frames:
        assert f.array.shape == (240, 320) and f.array.dtype == np.uint8
        assert np.shares_memory(f.array, _data(f))  # zero copy: the producer's own buffer
        assert not f.array.flags.writeable
        assert f.part_id == f"cam0-{f.frame_id}" and f.error is None
        assert f.device_timestamp is None  # Viky has no buffer timestamps
        assert f.captured_ns <= time.monotonic_ns()
    assert frames[1].frame_id == frames[0].frame_id + 1
    h = cam.health()
    assert h["connected"] and h["held"] == 3 and h["frames_delivered"] == 3 and h["pixel_format"] == "Mono8"
    for f in frames:
        cam.release(f)
    cam.release(frames[0])
    h = cam.health()
    assert h["held"] == 0 and h["double_releases"] == 1
    gen.close()


def test_rgba8_is_delivered_as_an_rgb_view(cams: list[GenICamCamera]) -> None:
    cam = _open(cams, pixel_format="RGBa8", roi={"width": 200, "height": 100}, device="1")
    assert cam.device_description is not None and "green" in cam.device_description
    gen = cam.frames()
    f = next(gen)
    assert f.array.shape == (100, 200, 3) and f.channel_order == "RGB"
    assert f.array.strides == (800, 4, 1) and np.shares_memory(f.array, _data(f))
    cam.release(f)
    gen.close()


def test_buffers_are_held_until_released(cams: list[GenICamCamera]) -> None:
    cam = _open(
        cams, pixel_format="Mono8", roi={"width": 128, "height": 100}, frame_rate=100.0,
        num_buffers=4, fetch_timeout_s=0.2, lost_after_timeouts=2,
    )  # fmt: skip
    gen = cam.frames()
    held = [next(gen) for _ in range(4)]
    snapshots = [f.array.copy() for f in held]
    got: list[Frame] = []
    errors: list[BaseException] = []

    def fifth() -> None:
        try:
            got.append(next(gen))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=fifth, daemon=True)
    t.start()
    t.join(0.9)  # several fetch timeouts: every buffer is held, none is requeued behind our back
    assert t.is_alive() and not got and not errors
    assert cam.health()["starved_timeouts"] >= 2  # starvation is not a lost camera
    for f, snap in zip(held, snapshots, strict=True):
        assert np.array_equal(f.array, snap)  # the producer did not write into held buffers
    cam.release(held[0])
    t.join(2.0)
    assert not t.is_alive() and not errors and got
    assert got[0].frame_id > held[-1].frame_id
    assert np.shares_memory(got[0].array, _data(held[0]))  # the very buffer we gave back
    for f, snap in zip(held[1:], snapshots[1:], strict=True):
        assert np.array_equal(f.array, snap)
    for f in held[1:] + got:
        cam.release(f)
    gen.close()


def test_missing_node_names_the_node_the_device_and_close_matches(cams: list[GenICamCamera]) -> None:
    with pytest.raises(CameraNodeError) as err:
        _open(cams, node_overrides={"BouncingBallSise": 10})
    msg = str(err.value)
    assert "'BouncingBallSise'" in msg and "Viky" in msg and "BouncingBallSize" in msg
    with pytest.raises(CameraNodeError, match="ExposureTime"):
        _open(cams, exposure_us=500.0)  # the simulator has no exposure


def test_read_only_node_and_out_of_range_values(cams: list[GenICamCamera]) -> None:
    with pytest.raises(CameraNodeError, match="'PayloadSize' is not writable"):
        _open(cams, node_overrides={"PayloadSize": 5})
    with pytest.raises(CameraNodeError, match=r"AcquisitionFrameRate.*1\.0\.\.200\.0"):
        _open(cams, frame_rate=500.0)
    with pytest.raises(CameraNodeError, match="choices: RGBa8, Mono8"):
        _open(cams, pixel_format="BGR8")


def test_node_overrides_are_written(cams: list[GenICamCamera]) -> None:
    cam = _open(cams, node_overrides={"BouncingBallSize": 7, "Width": 256})
    assert cam._ia is not None
    nm = cam._ia.remote_device.node_map
    assert (nm.BouncingBallSize.value, nm.Width.value) == (7, 256)


def test_close_and_reopen(cams: list[GenICamCamera]) -> None:
    cam = _open(cams, pixel_format="Mono8", roi={"width": 160, "height": 120}, frame_rate=100.0, device=0)
    gen = cam.frames()
    kept = next(gen)
    gen.close()
    cam.close()
    assert kept.array.shape == (120, 160) and int(kept.array.sum()) >= 0  # memory still valid
    cam.release(kept)
    h = cam.health()
    assert h["late_releases"] == 1 and not h["connected"] and h["held"] == 0
    for _ in range(2):
        cam.open()
        gen = cam.frames()
        f = next(gen)
        assert f.array.shape == (120, 160) and np.shares_memory(f.array, _data(f))
        cam.release(f)
        gen.close()
        cam.close()
    cam.close()  # repeatable


def test_two_cameras_share_one_producer(cams: list[GenICamCamera]) -> None:
    red = _open(cams, name="red", device="VikyTL_DEV_red", pixel_format="Mono8", frame_rate=100.0)
    blue = _open(cams, name="blue", device=2, pixel_format="Mono8", frame_rate=100.0)
    assert red._producer is blue._producer
    for cam in (red, blue):
        gen = cam.frames()
        f = next(gen)
        assert f.camera == cam.name and f.part_id.startswith(cam.name + "-")
        cam.release(f)
        gen.close()
    red.close()
    gen = blue.frames()  # closing one camera leaves the other streaming
    f = next(gen)
    blue.release(f)
    gen.close()
    red.open()  # and the closed one can come back while the other is open
    gen = red.frames()
    red.release(next(gen))
    gen.close()


def test_unknown_device_is_lost_and_lists_the_devices(cams: list[GenICamCamera]) -> None:
    with pytest.raises(CameraLostError, match=r"'nope' not found.*VikyTL_DEV_green"):
        _open(cams, device="nope")
    with pytest.raises(CameraLostError):
        _open(cams, device=7)


def test_consecutive_timeouts_while_free_running_mean_lost(cams: list[GenICamCamera]) -> None:
    cam = _open(cams, frame_rate=1.0, fetch_timeout_s=0.05, lost_after_timeouts=3, pixel_format="Mono8")
    gen = cam.frames()
    with pytest.raises(CameraLostError, match="no frame in 3 fetches"):
        for _ in range(5):
            cam.release(next(gen))


def test_with_a_hardware_trigger_silence_is_not_loss(cams: list[GenICamCamera]) -> None:
    cam = _open(cams, frame_rate=1.0, fetch_timeout_s=0.05, lost_after_timeouts=2, pixel_format="Mono8")
    # the simulator has no TriggerMode node: switch the camera's view of its mode after opening
    cam.config = cam.config.model_copy(update={"trigger_mode": "hardware"})
    gen = cam.frames()
    t0 = time.monotonic()
    f = next(gen)  # waits through many timeouts for the 1 Hz frame
    cam.release(f)
    if time.monotonic() - t0 < 0.3:  # the first frame may come at once; wait for the next one
        cam.release(next(gen))
    assert cam.health()["timeouts"] >= 3
    gen.close()


def test_fetch_errors_mean_lost(cams: list[GenICamCamera], monkeypatch: pytest.MonkeyPatch) -> None:
    cam = _open(cams, pixel_format="Mono8")
    assert cam._ia is not None

    def broken(**_: Any) -> None:
        raise RuntimeError("GenTL exception: device removed")

    monkeypatch.setattr(cam._ia, "try_fetch", broken)
    with pytest.raises(CameraLostError, match="device removed"):
        next(cam.frames())
    assert "device removed" in str(cam.health()["last_error"])


def test_incomplete_buffers_become_error_frames(cams: list[GenICamCamera]) -> None:
    cam = _open(cams, pixel_format="Mono8", frame_rate=100.0)
    assert cam._ia is not None
    gen = cam.frames()
    cam.release(next(gen))
    cam._ia._emit_callbacks(ImageAcquirer.Events.INCOMPLETE_BUFFER)  # what harvesters does on one
    f = next(gen)
    assert f.error is not None and "incomplete" in f.error and f.array.size == 0
    cam.release(f)
    assert cam.health()["frames_incomplete"] == 1
    g = next(gen)
    assert g.error is None
    cam.release(g)
    gen.close()


def test_opening_in_the_main_thread_keeps_the_sigint_handler(cams: list[GenICamCamera]) -> None:
    before = signal.getsignal(signal.SIGINT)
    _open(cams, pixel_format="Mono8")
    assert signal.getsignal(signal.SIGINT) is before
