"""GenICam camera over any GenTL producer (.cti) through harvesters.

Zero copy: a frame's `array` is a read-only view on the GenTL buffer the producer filled
(`buffer.payload.components[0].data`), and the buffer is queued back to the stream only when
the pipeline calls `release(frame)` after the verdict. The stream therefore needs more buffers
(`num_buffers`) than the pipeline can hold at once (its ring slots), or acquisition starves.

Polling, not blocking: harvesters' `fetch()` waits inside GenTL while holding the GIL, which
halves the throughput of every other Python thread (the inference worker's pre/post-processing
included). Here each poll is a non-blocking GenTL event check and the wait between polls is a
GIL-free `time.sleep(poll_interval_s)`; the cost is at most one poll interval of latency.

Loss: a GenTL/GenApi error while fetching, or `lost_after_timeouts` consecutive fetch timeouts
while frames are expected (free-running, not starved by held buffers), raise `CameraLostError`;
the pipeline closes, backs off and reopens. With a hardware trigger silence is normal. An
incomplete buffer is queued back at once and delivered as an error frame (FAILSAFE verdict).

A GenTL producer can be loaded only once per process (a second Harvester on the same .cti sees
no device), so cameras share one Harvester per producer file (`cameras.gentl.GenTLProducer`),
reference-counted. Node writing and its errors are in `cameras.genicam_nodes`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from harvesters.core import Callback, ImageAcquirer
from pydantic import BaseModel, ConfigDict, Field

from cameras import genicam_nodes as nodes
from cameras.base import CameraConfigBase, Frame, resolve_path
from cameras.buffers import HeldFrames
from cameras.genicam_nodes import NodeValue
from cameras.gentl import GenTLProducer, bundled_cti
from edge.errors import CameraError, CameraFatalError, CameraLostError

log = logging.getLogger(__name__)

# pixel format -> (bytes per pixel in the buffer, channels delivered, channel order)
PIXEL_FORMATS: dict[str, tuple[int, int, str]] = {
    "Mono8": (1, 1, "BGR"),
    "BGR8": (3, 3, "BGR"),
    "RGB8": (3, 3, "RGB"),
    "BGRa8": (4, 3, "BGR"),  # the 3 colour bytes of each 4-byte pixel, a strided view
    "RGBa8": (4, 3, "RGB"),
}


class RoiConfig(BaseModel):
    """Region of interest written to Width/Height/OffsetX/OffsetY."""

    model_config = ConfigDict(extra="forbid")

    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    offset_x: int = Field(default=0, ge=0)
    offset_y: int = Field(default=0, ge=0)


class GenICamCameraConfig(CameraConfigBase):
    """A GenICam camera (GigE Vision, USB3 Vision, ...) through its vendor's GenTL producer."""

    type: Literal["genicam"] = "genicam"
    cti: str | None = Field(
        default=None, description="GenTL producer file; None = the Viky simulator bundled with genicam."
    )
    device: str | int | None = Field(
        default=None, description="Serial number, device id, user-defined name (str) or list index (int); None = first."
    )
    pixel_format: str | None = Field(default=None, description=f"PixelFormat; delivered: {', '.join(PIXEL_FORMATS)}.")
    roi: RoiConfig | None = None
    exposure_us: float | None = Field(default=None, gt=0, description="ExposureTime in microseconds.")
    frame_rate: float | None = Field(default=None, gt=0, description="AcquisitionFrameRate in Hz.")
    trigger_mode: Literal["off", "software", "hardware"] | None = Field(
        default=None, description="FrameStart trigger; None leaves the device's setting."
    )
    trigger_source: str | None = Field(default=None, description="TriggerSource for hardware triggers, e.g. Line0.")
    num_buffers: int = Field(
        default=16,
        ge=1,
        description="GenTL stream buffers; must exceed the pipeline's ring slots (frames held at once).",
    )
    fetch_timeout_s: float = Field(default=1.0, gt=0, description="One fetch waits this long for a frame.")
    lost_after_timeouts: int = Field(
        default=5, ge=1, description="Consecutive fetch timeouts (free-running) that mean the camera is gone."
    )
    poll_interval_s: float = Field(
        default=0.001, ge=0.0001, le=0.1, description="Sleep between non-blocking buffer polls (GIL-free wait)."
    )
    node_overrides: dict[str, NodeValue] = Field(
        default_factory=dict,
        description="Any other GenICam node, written in order before the typed settings (True executes a command).",
    )

    def build(self, base_dir: Path) -> GenICamCamera:
        return GenICamCamera(self, Path(base_dir))


class _IncompleteCounter(Callback):
    def __init__(self, camera: GenICamCamera) -> None:
        self._camera = camera

    def emit(self, context: Any = None) -> None:
        self._camera._incomplete_pending += 1


class GenICamCamera:
    """A `Camera` over a GenTL producer (see the module docstring)."""

    def __init__(self, config: GenICamCameraConfig, base_dir: Path) -> None:
        self.config = config
        self.name = config.name
        self._cti_config = None if config.cti is None else resolve_path(base_dir, config.cti)
        self.cti: Path | None = None
        self.device_description: str | None = None
        self.pixel_format: str | None = None
        self._producer: GenTLProducer | None = None
        self._ia: ImageAcquirer | None = None
        # id(buffer) -> harvesters Buffer (error frames: None); its lock also serialises
        # buffer.queue() against teardown
        self._held = HeldFrames()
        self._io_lock = threading.Lock()
        self._closing = threading.Event()
        self._session = 0
        self._connected = False
        self._started = False
        self._incomplete_pending = 0
        self._pending_triggers = 0
        self._frame_counter = 0
        self._empty = np.empty((0, 0), np.uint8)
        self._empty.flags.writeable = False
        self.frames_delivered = 0
        self.frames_incomplete = 0
        self.timeouts = 0
        self.consecutive_timeouts = 0
        self.starved_timeouts = 0
        self.last_error: str | None = None

    # -- open ------------------------------------------------------------------------------
    def _resolve_cti(self) -> Path:
        if self._cti_config is None:
            return bundled_cti()
        if not self._cti_config.is_file():
            raise CameraFatalError(f"genicam camera {self.name}: GenTL producer {self._cti_config} does not exist")
        return self._cti_config

    def open(self) -> None:
        self.close()
        self._closing.clear()
        cti = self._resolve_cti()
        producer = GenTLProducer.acquire(cti)
        ia: ImageAcquirer | None = None
        try:
            ia, desc = producer.create(self.config.device)
            self.device_description = desc
            try:
                ia.num_buffers = self.config.num_buffers
            except ValueError as exc:
                raise CameraFatalError(f"{desc}: num_buffers={self.config.num_buffers}: {exc}") from exc
            # Polling: non-blocking GenTL event checks, GIL-free sleeps in between (see module doc).
            ia.timeout_period_on_client_fetch_call = self.config.fetch_timeout_s
            ia.timeout_period_on_update_event_data_call = 0
            self._configure(ia, desc)
            self.pixel_format = self._check_pixel_format(ia, desc)
            ia.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, _IncompleteCounter(self))
        except BaseException:
            if ia is not None:
                try:
                    producer.destroy(ia)
                except Exception:
                    log.exception("genicam %s: destroying a half-opened device failed", self.name)
            producer.release()
            raise
        self.cti = cti
        self._producer, self._ia = producer, ia
        self._session += 1
        self._connected = True
        self._started = False
        self._incomplete_pending = 0
        self._pending_triggers = 0
        self.consecutive_timeouts = 0
        log.info("genicam %s: opened %s via %s (%s)", self.name, desc, cti.name, self.pixel_format)

    # -- node writing ----------------------------------------------------------------------
    def write_node(self, node_map: Any, name: str, value: NodeValue, device: str) -> None:
        """Write one node, raising CameraNodeError that names the node, the device and why."""
        nodes.write_node(node_map, name, value, device)

    def _configure(self, ia: ImageAcquirer, device: str) -> None:
        c = self.config
        nm = ia.remote_device.node_map
        for name, value in c.node_overrides.items():
            self.write_node(nm, name, value, device)
        if c.pixel_format is not None:
            self.write_node(nm, "PixelFormat", c.pixel_format, device)
        if c.roi is not None:
            r = c.roi
            # offsets to 0 first so a larger width/height fits, then size, then the offsets
            for axis in ("OffsetX", "OffsetY"):
                if nodes.has_writable_node(nm, axis):
                    self.write_node(nm, axis, 0, device)
            if r.width is not None:
                self.write_node(nm, "Width", r.width, device)
            if r.height is not None:
                self.write_node(nm, "Height", r.height, device)
            for axis, off in (("OffsetX", r.offset_x), ("OffsetY", r.offset_y)):
                if off or nodes.get_node(nm, axis) is not None:
                    if off or nodes.has_writable_node(nm, axis):
                        self.write_node(nm, axis, off, device)
        if c.exposure_us is not None:
            self.write_node(nm, "ExposureTime", c.exposure_us, device)
        if c.frame_rate is not None:
            if nodes.has_writable_node(nm, "AcquisitionFrameRateEnable"):
                self.write_node(nm, "AcquisitionFrameRateEnable", True, device)
            self.write_node(nm, "AcquisitionFrameRate", c.frame_rate, device)
        if c.trigger_mode is not None:
            if "TriggerSelector" not in c.node_overrides and nodes.has_writable_node(nm, "TriggerSelector"):
                self.write_node(nm, "TriggerSelector", "FrameStart", device)
            self.write_node(nm, "TriggerMode", "Off" if c.trigger_mode == "off" else "On", device)
            if c.trigger_mode == "software":
                self.write_node(nm, "TriggerSource", c.trigger_source or "Software", device)
            elif c.trigger_mode == "hardware" and c.trigger_source is not None:
                self.write_node(nm, "TriggerSource", c.trigger_source, device)

    def _check_pixel_format(self, ia: ImageAcquirer, device: str) -> str | None:
        node = nodes.get_node(ia.remote_device.node_map, "PixelFormat")
        if node is None:
            return None
        try:
            fmt = str(node.value)
        except Exception:
            return None
        if fmt not in PIXEL_FORMATS:
            try:
                offered = ", ".join(node.symbolics)
            except Exception:
                offered = "?"
            raise CameraFatalError(
                f"{device}: PixelFormat {fmt} is not supported (supported: {', '.join(PIXEL_FORMATS)}; "
                f"the device offers: {offered}); set pixel_format"
            )
        return fmt

    # -- close -----------------------------------------------------------------------------
    def close(self) -> None:
        """Give held buffers back, stop and destroy the acquirer; repeatable, callable from any thread."""
        self._closing.set()
        got = self._io_lock.acquire(timeout=self.config.fetch_timeout_s + 10.0)
        if not got:  # pragma: no cover - a fetch poll never blocks this long
            log.error("genicam %s: close() could not stop the acquisition thread; leaving the device open", self.name)
            return
        try:
            self._session += 1
            with self._held.lock:
                buffers = [b for b in self._held.drain() if b is not None]
                for b in buffers:
                    try:
                        b.queue()
                    except Exception as exc:
                        log.debug("genicam %s: queueing a held buffer at close failed: %s", self.name, exc)
            ia, producer = self._ia, self._producer
            self._ia = self._producer = None
            if ia is not None and producer is not None:
                try:
                    producer.destroy(ia)
                except Exception:
                    log.exception("genicam %s: destroying the image acquirer failed", self.name)
            if producer is not None:
                producer.release()
            self._connected = False
            self._started = False
        finally:
            self._io_lock.release()

    # -- frames ----------------------------------------------------------------------------
    def frames(self) -> Generator[Frame, None, None]:
        session = self._session
        if not self._connected or self._ia is None:
            raise CameraError(f"genicam {self.name}: frames() before open()")
        with self._io_lock:
            if not self._started:
                try:
                    self._ia.start()
                except Exception as exc:
                    self.last_error = f"start failed: {exc}"
                    raise CameraLostError(f"{self.device_description}: cannot start acquisition: {exc}") from exc
                self._started = True
        while session == self._session and not self._closing.is_set():
            frame = self._poll(session)
            while self._incomplete_pending > 0:  # parts the producer could not deliver whole
                self._incomplete_pending -= 1
                self.frames_incomplete += 1
                yield self._error_frame("incomplete buffer (queued back by the producer)")
            if frame is not None:
                yield frame

    def _expecting_frames(self) -> bool:
        mode = self.config.trigger_mode
        if mode == "hardware":
            return False
        if mode == "software":
            return self._pending_triggers > 0
        return True

    def _poll(self, session: int) -> Frame | None:
        """Wait up to fetch_timeout_s for a buffer; a frame, or None on timeout / close."""
        deadline = time.monotonic() + self.config.fetch_timeout_s
        while True:
            with self._io_lock:
                if session != self._session or self._ia is None:
                    return None
                try:
                    got = self._ia.try_fetch(timeout=5e-5)
                except Exception as exc:  # GenTL/GenApi error: the device or its stream went away
                    self.last_error = f"fetch failed: {exc}"
                    raise CameraLostError(f"{self.device_description}: fetch failed: {exc}") from exc
                if isinstance(got, list):  # several data streams: the first one's buffer is the image
                    for extra in got[1:]:
                        if extra is not None:
                            extra.queue()
                    got = got[0]
                if got is not None:
                    captured = time.monotonic_ns()
                    self.consecutive_timeouts = 0
                    if self._pending_triggers > 0:
                        self._pending_triggers -= 1
                    return self._to_frame(got, captured)
            if self._incomplete_pending:
                return None
            if time.monotonic() >= deadline:
                self._on_timeout()
                return None
            if self._closing.wait(self.config.poll_interval_s):
                return None

    def _on_timeout(self) -> None:
        self.timeouts += 1
        starved = self._held.resources_held() >= self.config.num_buffers
        if starved:  # every buffer is held by the pipeline: the camera cannot deliver
            self.starved_timeouts += 1
            self.consecutive_timeouts = 0
            return
        if not self._expecting_frames():
            self.consecutive_timeouts = 0
            return
        self.consecutive_timeouts += 1
        if self.consecutive_timeouts >= self.config.lost_after_timeouts:
            n = self.consecutive_timeouts
            self.consecutive_timeouts = 0
            self.last_error = f"no frame in {n} fetches of {self.config.fetch_timeout_s} s"
            raise CameraLostError(f"{self.device_description}: {self.last_error}")

    def _to_frame(self, buffer: Any, captured_ns: int) -> Frame:
        try:
            frame_id = int(buffer.module.frame_id)
        except Exception:
            frame_id = self._frame_counter
        self._frame_counter = frame_id + 1
        try:
            array, order = self._view(buffer)
        except ValueError as exc:  # unusable payload: give the buffer back at once
            try:
                buffer.queue()
            except Exception:
                pass
            self.frames_incomplete += 1
            self.last_error = str(exc)
            return self._error_frame(str(exc), frame_id)
        try:
            ts: int | None = int(buffer.timestamp_ns) or None
        except Exception:  # the producer has no timestamps (the Viky simulator raises NotAvailable)
            ts = None
        self._held.add(id(buffer), buffer)
        self.frames_delivered += 1
        return Frame(
            array=array,
            frame_id=frame_id,
            part_id=f"{self.name}-{frame_id}",
            camera=self.name,
            captured_ns=captured_ns,
            device_timestamp=ts,
            handle=buffer,
            channel_order=order,
        )

    @staticmethod
    def _view(buffer: Any) -> tuple[np.ndarray, str]:
        """A read-only HxW / HxWx3 view on the buffer's first component (ValueError if unusable)."""
        payload = buffer.payload
        components = payload.components if payload is not None else []
        if not components:
            raise ValueError("buffer without an image component")
        comp = components[0]
        data = comp.data
        fmt = str(comp.data_format)
        if fmt not in PIXEL_FORMATS:
            raise ValueError(f"unsupported pixel format {fmt}")
        bpp, channels, order = PIXEL_FORMATS[fmt]
        w, h = int(comp.width), int(comp.height)
        try:
            pad = int(comp.x_padding)
        except Exception:
            pad = 0
        row = w * bpp + pad
        need = row * (h - 1) + w * bpp if h > 0 else 0
        if data is None or w <= 0 or h <= 0 or data.dtype != np.uint8 or data.size < need:
            got = None if data is None else data.size
            raise ValueError(f"incomplete {fmt} buffer: {got} bytes for {w}x{h}")
        flat = data.reshape(-1)
        if channels == 1:
            shape: tuple[int, ...] = (h, w)
            strides: tuple[int, ...] = (row, 1)
        else:
            shape, strides = (h, w, channels), (row, bpp, 1)
        view = np.lib.stride_tricks.as_strided(flat, shape=shape, strides=strides, writeable=False)
        return view, order

    def _error_frame(self, reason: str, frame_id: int | None = None) -> Frame:
        if frame_id is None:
            frame_id = self._frame_counter
            self._frame_counter += 1
        token = object()
        self._held.add(id(token), None)
        self.last_error = reason
        return Frame(
            array=self._empty,
            frame_id=frame_id,
            part_id=f"{self.name}-{frame_id}",
            camera=self.name,
            captured_ns=time.monotonic_ns(),
            handle=token,
            error=reason,
        )

    # -- release / trigger / health --------------------------------------------------------
    def release(self, frame: Frame) -> None:
        with self._held.lock:  # queued before close() can destroy the stream
            first, buffer = self._held.pop(id(frame.handle))
            if first and buffer is not None:
                try:
                    buffer.queue()
                except Exception as exc:  # the stream is gone; the reconnect handles it
                    log.debug("genicam %s: queueing frame %s failed: %s", self.name, frame.frame_id, exc)

    def trigger(self) -> None:
        """Fire a software trigger (trigger_mode: software)."""
        if self.config.trigger_mode != "software":
            raise CameraError(f"genicam {self.name}: trigger() needs trigger_mode: software")
        with self._io_lock:
            ia = self._ia
            if ia is None:
                raise CameraError(f"genicam {self.name}: trigger() while closed")
            self.write_node(ia.remote_device.node_map, "TriggerSoftware", True, self.device_description or self.name)
            self._pending_triggers += 1

    def health(self) -> dict[str, Any]:
        return {
            "type": "genicam",
            "connected": self._connected,
            "device": self.device_description,
            "cti": str(self.cti) if self.cti else None,
            "pixel_format": self.pixel_format,
            "frames_delivered": self.frames_delivered,
            "frames_incomplete": self.frames_incomplete,
            "timeouts": self.timeouts,
            "starved_timeouts": self.starved_timeouts,
            "held": self._held.resources_held(),
            "num_buffers": self.config.num_buffers,
            "double_releases": self._held.double_releases,
            "late_releases": self._held.late_releases,
            "last_error": self.last_error,
        }
