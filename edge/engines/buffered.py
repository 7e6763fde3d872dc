"""What the engines over preallocated arrays share: ONNX Runtime, OpenVINO and TensorRT.

Each such engine owns a (B, C, H, W) input array that the shared preprocessing writes into and
an output array that `infer()` refills. `BufferedEngine` holds the two arrays, their accessors
and the "not loaded" error, the check of the configured batch and the model's channels and size
against the model's fixed input dims, and what a failed load does (close what was opened, and
wrap an error that is not edge-inspect's own in an `EngineError`).

The input array is either the model's own float (B, C, H, W) tensor, or, where the runtime
takes over the conversion (`fuse_preprocess`: ONNX Runtime, OpenVINO, TensorRT), a (B, H, W, C) uint8
buffer of BGR camera pixels; `edge.engines.letterbox.Preprocessor` fills either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from edge.engines.base import EngineConfigBase, ModelInfo
from edge.errors import EdgeInspectError, EngineError

ConfigT = TypeVar("ConfigT", bound=EngineConfigBase)

_INPUT_AXES = ("batch", "channels", "height", "width")

FUSE_PREPROCESS_HELP = (
    "Feed the runtime the letterboxed uint8 BGR pixels and let it convert them (layout, channel "
    "swap, float, /255) as the first steps of its graph, instead of numpy filling the float "
    "NCHW tensor in Python (false). The model sees the same numbers: bit-identical on ONNX "
    "Runtime, within float rounding on OpenVINO."
)


class BufferedEngine(ABC, Generic[ConfigT]):
    """Base of an `Engine` whose input and output are arrays it preallocates at `load()`."""

    def __init__(self, config: ConfigT, model_path: Path) -> None:
        self.config = config
        self.model_path = Path(model_path)
        self.info: ModelInfo | None = None
        self._input: np.ndarray | None = None
        self._output: np.ndarray | None = None

    @abstractmethod
    def close(self) -> None: ...

    def input_buffer(self) -> np.ndarray:
        if self._input is None:
            raise self._not_loaded()
        return self._input

    def output_shape(self) -> tuple[int, ...]:
        if self._output is None:
            raise self._not_loaded()
        return tuple(self._output.shape)

    def _not_loaded(self) -> EngineError:
        return EngineError(f"{self.model_path}: engine not loaded")

    def _configured_input_shape(self, info: ModelInfo) -> tuple[int, int, int, int]:
        """(batch, channels, height, width): the configured batch, the model's channels and size."""
        return (self.config.batch, info.channels, info.input_hw[0], info.input_hw[1])

    def _allocate_input(self, shape: tuple[int, int, int, int], dtype: np.dtype, *, pixels: bool) -> np.ndarray:
        """The input array for a (B, C, H, W) model input: that tensor, or (B, H, W, C) uint8 pixels."""
        if pixels:
            b, c, h, w = shape
            return np.zeros((b, h, w, c), np.uint8)
        return np.zeros(shape, dtype=dtype)

    def _checked_input_shape(
        self, dims: Sequence[object], info: ModelInfo, *, batch_advice: str = ""
    ) -> tuple[int, int, int, int]:
        """The configured input shape, or EngineError where a fixed (int) model dim disagrees.

        `dims` are the model's input dims, an int where fixed (anything else is dynamic);
        `batch_advice` is appended to the message when the batch is the dim that disagrees.
        """
        want = self._configured_input_shape(info)
        for got, w, what in zip(dims, want, _INPUT_AXES, strict=True):
            if isinstance(got, int) and got != w:
                raise EngineError(
                    f"{self.model_path}: the model's {what} is fixed at {got}, configured {w}"
                    + (batch_advice if what == "batch" else "")
                )
        return want

    @contextmanager
    def _closed_on_failure(self, runtime_name: str) -> Iterator[None]:
        """Around opening the runtime: on any error close what was opened, then raise.

        edge-inspect's own errors pass through; any other becomes "`runtime_name` could not load
        the model" (an `EngineError`).
        """
        try:
            yield
        except EdgeInspectError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise EngineError(f"{self.model_path}: {runtime_name} could not load the model: {e}") from e
