"""The Engine protocol and the model metadata every engine reports.

An engine owns a preallocated input (`input_buffer()`: the model's float NCHW tensor, or NHWC
uint8 BGR pixels for an engine that converts them itself) that the shared letterbox writes into
in place, and returns its raw output from `infer()` as an array that stays valid until the next
call. Pre/post-processing lives in `edge.engines.letterbox` and `edge.engines.yolo`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Layout = Literal["anchors", "end2end"]  # 1 x (4+nc) x N, or NMS-free 1 x K x 6


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: read from the ONNX metadata Ultralytics writes."""

    path: str
    model_id: str  # sha256 of the model file, first 16 hex digits
    names: tuple[str, ...]
    input_hw: tuple[int, int]
    channels: int
    batch: int
    layout: Layout
    input_dtype: np.dtype
    stride: int = 32
    task: str = "detect"
    # a golden-reference model: its input is the composite of the part and its defect-free
    # reference (`edge.reference`), not the camera frame alone
    reference_input: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.names)


@runtime_checkable
class Engine(Protocol):
    """A loaded inference runtime for one model, batch and input size."""

    runtime: str  # e.g. "onnxruntime", "openvino"

    def load(self) -> ModelInfo: ...

    def input_buffer(self) -> np.ndarray: ...

    def infer(self) -> np.ndarray: ...

    def close(self) -> None: ...


class EngineConfigBase(BaseModel):
    """Fields every engine plugin has."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(..., description="Path of the ONNX model (relative to the config file).")
    confidence: float = Field(0.25, ge=0, le=1, description="Detections below this are dropped.")
    iou: float = Field(0.45, gt=0, le=1, description="NMS IoU threshold.")
    max_detections: int = Field(300, ge=1)
    batch: int = Field(1, ge=1, description="Fixed batch size (>1 for multi-camera).")
    warmup: int = Field(3, ge=0, description="Inferences run at load before the first frame.")
    classes: list[str] | None = Field(None, description="Expected class names; a model that disagrees is refused.")
