"""Ultralytics reference engine: for parity checks and benchmarks only, never production.

It runs `YOLO(model).predict(frame, conf=, iou=, imgsz=)` end to end (Ultralytics' own
letterbox, inference, NMS, scaling), so it does not fit the raw-output `Engine` protocol:
`input_buffer()` and `infer()` raise, `predict(frame) -> Detections` is the way to use it.
Comparing its detections with `Preprocessor -> engine.infer() -> decode` on the same model
checks that the shared pre/post-processing matches Ultralytics. `ultralytics` (and torch) are
imported inside `load()` only; without them `load()` raises `EngineUnavailableError`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge.engines.base import EngineConfigBase, ModelInfo
from edge.engines.detections import Detections
from edge.engines.model import model_id_of, read_model_info, resolve_model_path
from edge.errors import EngineError, EngineUnavailableError

log = logging.getLogger(__name__)


class UltralyticsEngineConfig(EngineConfigBase):
    """Reference runs through the Ultralytics package (parity and benchmarks only)."""

    type: Literal["ultralytics"] = "ultralytics"
    imgsz: int | list[int] | None = Field(None, description="Inference size; default the model's.")
    device: str | None = Field(None, description="Ultralytics device string: 'cpu', '0', ...")

    def build(self, base_dir: Path) -> UltralyticsEngine:
        return UltralyticsEngine(self, resolve_model_path(self.model, base_dir))


class UltralyticsEngine:
    """Wraps `ultralytics.YOLO`; `predict(frame)` gives detections in camera pixels."""

    runtime = "ultralytics"

    def __init__(self, config: UltralyticsEngineConfig, model_path: Path) -> None:
        self.config = config
        self.model_path = Path(model_path)
        self.info: ModelInfo | None = None
        self._yolo: Any = None

    def load(self) -> ModelInfo:
        if self.info is not None:
            return self.info
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise EngineUnavailableError(
                "ultralytics is not installed (it is only needed for the reference engine)"
            ) from e
        if self.model_path.suffix.lower() == ".onnx":
            info = read_model_info(self.model_path, self.config.classes)
        else:
            info = None
        try:
            self._yolo = YOLO(str(self.model_path), task="detect")
        except Exception as e:
            raise EngineError(f"{self.model_path}: ultralytics could not load the model: {e}") from e
        if info is None:  # a .pt model: describe it from the loaded model
            names = self._yolo.names
            imgsz = self._imgsz() or 640
            info = ModelInfo(
                path=str(self.model_path),
                model_id=model_id_of(self.model_path),
                names=tuple(names[i] for i in range(len(names))),
                input_hw=(imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1])),
                channels=3,
                batch=1,
                layout="anchors",
                input_dtype=np.dtype(np.float32),
            )
        self.info = info
        for _ in range(self.config.warmup):
            self.predict(np.full((info.input_hw[0], info.input_hw[1], 3), 114, np.uint8))
        log.info("ultralytics loaded %s (id %s) for reference runs", self.model_path, info.model_id)
        return info

    def _imgsz(self) -> int | list[int] | None:
        if self.config.imgsz is not None:
            return self.config.imgsz
        if self.info is not None:
            return list(self.info.input_hw)
        return None

    def predict(self, frame: np.ndarray) -> Detections:
        """Ultralytics' full pipeline on one BGR (or mono) uint8 frame."""
        if self._yolo is None:
            raise EngineError(f"{self.model_path}: engine not loaded")
        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
            frame = np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2)
        kwargs: dict[str, Any] = {
            "conf": self.config.confidence,
            "iou": self.config.iou,
            "max_det": self.config.max_detections,
            "verbose": False,
        }
        imgsz = self._imgsz()
        if imgsz is not None:
            kwargs["imgsz"] = imgsz
        if self.config.device is not None:
            kwargs["device"] = self.config.device
        result = self._yolo.predict(frame, **kwargs)[0]
        boxes = result.boxes
        return Detections(
            np.asarray(boxes.xyxy.cpu().numpy(), np.float32).reshape(-1, 4),
            np.asarray(boxes.conf.cpu().numpy(), np.float32).reshape(-1),
            np.asarray(boxes.cls.cpu().numpy(), np.int32).reshape(-1),
        )

    def input_buffer(self) -> np.ndarray:
        raise EngineError("the ultralytics engine is reference-only: use predict(frame)")

    def infer(self) -> np.ndarray:
        raise EngineError("the ultralytics engine is reference-only: use predict(frame)")

    def close(self) -> None:
        self._yolo = None
        self.info = None
