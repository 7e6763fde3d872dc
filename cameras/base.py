"""The Camera protocol, the frame it yields and shared camera config.

A camera yields `Frame`s whose `array` is a view on the camera's own buffer (no copy). The
pipeline holds the frame until its verdict is emitted and then calls `camera.release(frame)`,
which gives the buffer back to the producer (for GenICam: queues it back to the GenTL stream).
`frames()` raises `CameraLostError` when the device goes away; the acquisition loop then
closes, backs off and reopens the camera. A finite source simply ends the iterator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Labels known for a frame (replay with labels): boxes as (cls, x1, y1, x2, y2) in pixels."""

    boxes: tuple[tuple[int, float, float, float, float], ...]

    @property
    def defective(self) -> bool:
        return bool(self.boxes)


@dataclass(slots=True)
class Frame:
    """One camera frame held by reference until its verdict.

    `array` is HxW (mono) or HxWx3 (BGR) uint8 and shares memory with the camera buffer.
    `captured_ns` is host `time.monotonic_ns()` when the camera handed the frame over;
    `device_timestamp` is the camera's own clock where it has one (else None).
    `handle` is whatever the camera needs to give the buffer back. A frame with `error` set
    is one the camera could not deliver whole; the pipeline decides it FAILSAFE at once.
    `channel_order` is "BGR" unless a camera hands over RGB bytes unconverted ("RGB"); it is
    meaningless for a mono HxW array. A colour array may be a non-contiguous view (the three
    colour bytes of a 4-byte RGBa pixel): consumers must not assume C-contiguity.
    """

    array: np.ndarray
    frame_id: int
    part_id: str
    camera: str
    captured_ns: int
    device_timestamp: int | None = None
    handle: Any = None
    truth: GroundTruth | None = None
    error: str | None = None  # set for a glitched frame (incomplete, bad format): decided FAILSAFE
    # with `error`: the problem is the image itself (an undecodable or truncated file, no usable
    # reference), decided FAILSAFE `invalid_frame`; else the camera's (`camera_error`)
    invalid: bool = False
    channel_order: str = "BGR"  # order of a 3-channel array's last axis: "BGR" or "RGB"
    # the defect-free golden reference of this view, where the camera supplies one per frame
    # (replay `references`); read-only, for a golden-reference model (`edge.reference`)
    reference: np.ndarray | None = None


@runtime_checkable
class Camera(Protocol):
    """A source of frames. Thread use: `frames()` runs in the camera's acquisition thread;
    `release()` may be called from any thread."""

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def frames(self) -> Iterator[Frame]: ...

    def release(self, frame: Frame) -> None: ...

    def health(self) -> dict[str, Any]: ...


class CameraConfigBase(BaseModel):
    """Fields every camera plugin has."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="cam0", min_length=1, description="Camera name used in verdicts and metrics.")
    reconnect_initial_s: float = Field(default=0.5, gt=0, description="First reconnect back-off.")
    reconnect_max_s: float = Field(default=10.0, gt=0, description="Longest reconnect back-off.")


def resolve_path(base_dir: Path, value: str) -> Path:
    """A config path: `~` expanded, relative paths taken against the config file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p
