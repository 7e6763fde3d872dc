"""ONNX Runtime engine: one session, input and output bound once with IOBinding.

`load()` preallocates the input and the output as numpy arrays and binds them as `OrtValue`s
over that memory, so `infer()` is one `run_with_iobinding` call that allocates
nothing and fills the same output array every time. A preallocated `RunOptions` is passed on
purpose: without one, ORT 1.32's `run_with_iobinding` leaks ~120 bytes per call.

With `fuse_preprocess` (the default) the session runs the model with a uint8 pixel input put in
front of it (`edge.onnx_edit.pixel_input`), so the input array is (B, H, W, C) uint8 BGR.
With `rewrite_graph` (the default) two Ultralytics export patterns that ORT's CPU kernels run
slowly are rewritten first: the DFL softmax moved to the last axis (`edge.onnx_edit.dfl`) and
each channel Split folded into the convolution before it (`edge.onnx_edit.split_convs`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge.engines.base import EngineConfigBase, ModelInfo
from edge.engines.buffered import FUSE_PREPROCESS_HELP, BufferedEngine
from edge.engines.model import read_model_info, resolve_model_path
from edge.errors import EngineError, EngineUnavailableError
from edge.onnx_edit.dfl import with_last_axis_dfl
from edge.onnx_edit.pixel_input import with_pixel_input
from edge.onnx_edit.split_convs import with_split_convs

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disable": "ORT_DISABLE_ALL",
}


class OnnxRuntimeEngineConfig(EngineConfigBase):
    """Run the model with ONNX Runtime (CPU, or CUDA where onnxruntime-gpu is installed)."""

    type: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] | None = Field(
        None,
        description="Execution providers in order of preference; default CUDA if available, else CPU.",
    )
    intra_op_threads: int | None = Field(
        None, ge=0, description="Threads inside an operator (0 or unset: ORT's default, one per core)."
    )
    inter_op_threads: int | None = Field(None, ge=0, description="Threads across operators.")
    allow_spinning: bool = Field(
        True,
        description=(
            "Let ONNX Runtime's pool threads spin-wait for work inside a run (its own default). Off, they "
            "sleep between the parallel parts of every operator and inference runs slower (measured on "
            "2 x86 cores: ~25% fewer frames per second, benchmarks/results/web-spin0.json)."
        ),
    )
    stop_spinning_after_run: bool = Field(
        False,
        description=(
            "With allow_spinning: the pool threads stop spinning as soon as a run returns (ONNX Runtime's "
            "session.force_spinning_stop) and sleep until the next. Measured on 2 x86 vCPUs: the verdict's "
            "sinks get the cores sooner (decision -> MQTT subscriber p99 at 300 ppm 11.2 -> 7.3 ms, "
            "benchmarks/results/bridge-stop-spinning.json) and CPU per frame at 1200 ppm halves (65-68 -> "
            "34 ms: power and heat on a Jetson), but each run first wakes its threads: capture-to-verdict p99 "
            "at 1200 ppm 18-30 -> 43-46 ms (web.json -> web-stop-spinning.json). Off: ONNX Runtime's default."
        ),
    )
    graph_optimization: Literal["all", "extended", "basic", "disable"] = "all"
    fuse_preprocess: bool = Field(True, description=FUSE_PREPROCESS_HELP)
    rewrite_graph: bool = Field(
        True,
        description=(
            "Rewrite two patterns of Ultralytics exports that ONNX Runtime's CPU kernels run slowly: the DFL "
            "softmax over axis 1 (moved to the last axis) and the channel Split after each C2f/C3k2 block's "
            "first convolution (one convolution per part), ~20% of inference on yolo11n at 320; same outputs "
            "up to float summation order. False runs the graph as exported."
        ),
    )

    def build(self, base_dir: Path) -> OnnxRuntimeEngine:
        return OnnxRuntimeEngine(self, resolve_model_path(self.model, base_dir))


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise EngineUnavailableError("onnxruntime is not installed (pip install onnxruntime or onnxruntime-gpu)") from e
    return onnxruntime


def default_providers(available: list[str]) -> list[str]:
    """CUDA first where available, then CPU (never the Azure or other remote providers)."""
    chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*chosen, "CPUExecutionProvider"]


class OnnxRuntimeEngine(BufferedEngine[OnnxRuntimeEngineConfig]):
    """An `Engine` over an ONNX Runtime `InferenceSession` with IOBinding."""

    runtime = "onnxruntime"

    def __init__(self, config: OnnxRuntimeEngineConfig, model_path: Path) -> None:
        super().__init__(config, model_path)
        self.providers: list[str] = []
        self._session: Any = None
        self._binding: Any = None
        self._run_options: Any = None
        self._ort_values: list[Any] = []  # keep the OrtValues (and so the binding) alive
        self.rewrites: dict[str, int] = {}  # `rewrite_graph`: pattern -> how many were rewritten

    @property
    def version(self) -> str:
        return str(_import_ort().__version__)

    def load(self) -> ModelInfo:
        if self.info is not None:
            return self.info
        ort = _import_ort()
        info = read_model_info(self.model_path, self.config.classes)
        with self._closed_on_failure("onnxruntime"):
            self._open(ort, info)
        self.info = dataclasses.replace(info, batch=self.config.batch)
        for _ in range(self.config.warmup):
            self.infer()
        log.info(
            "onnxruntime %s loaded %s (id %s) on %s: input %s %s (model %s), output %s, rewritten %s",
            ort.__version__,
            self.model_path,
            info.model_id,
            ",".join(self.providers),
            self._input.shape if self._input is not None else None,
            self._input.dtype if self._input is not None else None,
            info.input_dtype,
            self._output.shape if self._output is not None else None,
            self.rewrites,
        )
        return self.info

    def _open(self, ort: Any, info: ModelInfo) -> None:
        cfg = self.config
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[cfg.graph_optimization])
        if cfg.intra_op_threads is not None:
            opts.intra_op_num_threads = cfg.intra_op_threads
        if cfg.inter_op_threads is not None:
            opts.inter_op_num_threads = cfg.inter_op_threads
        spin = "1" if cfg.allow_spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if cfg.allow_spinning and cfg.stop_spinning_after_run:
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        available = list(ort.get_available_providers())
        providers = cfg.providers if cfg.providers is not None else default_providers(available)
        missing = [p for p in providers if p not in available]
        if missing:
            raise EngineUnavailableError(
                f"{self.model_path}: onnxruntime providers {missing} are not available here (available: {available})"
            )
        path = str(self.model_path)
        source: str | bytes = path
        declared_out: list[Any] | None = None
        if cfg.fuse_preprocess or cfg.rewrite_graph:
            import onnx

            edited = onnx.load(path)
            if cfg.rewrite_graph:
                edited, self.rewrites["dfl_softmax"] = with_last_axis_dfl(edited, where=path)
                edited, self.rewrites["split_conv"] = with_split_convs(edited, where=path)
            if cfg.fuse_preprocess:
                edited = with_pixel_input(edited, where=path)
            source = edited.SerializeToString()
            # the file's declared output dims: from bytes, ORT reports the dims it inferred instead
            out_dims = edited.graph.output[0].type.tensor_type.shape.dim
            declared_out = [d.dim_value if d.HasField("dim_value") else None for d in out_dims]
        session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        self._session = session
        self.providers = list(session.get_providers())

        (inp,) = session.get_inputs()
        out = session.get_outputs()[0]
        output_dims = declared_out if declared_out is not None else list(out.shape)
        dims = list(inp.shape)
        if cfg.fuse_preprocess:  # (B, H, W, C) -> (B, C, H, W) for the check
            dims = [dims[0], dims[3], dims[1], dims[2]]
        shape = self._checked_input_shape(dims, info, batch_advice=" (export the model with that batch, or dynamic)")
        self._input = self._allocate_input(shape, info.input_dtype, pixels=cfg.fuse_preprocess)
        if all(isinstance(d, int) for d in output_dims):
            out_shape = [int(d) for d in output_dims]
        else:  # dynamic output dims: learn them from one run
            out_shape = [int(d) for d in session.run([out.name], {inp.name: self._input})[0].shape]
        out_dtype = _ORT_TYPES.get(out.type)
        if out_dtype is None:
            raise EngineError(f"{self.model_path}: unsupported output type {out.type}")
        self._output = np.zeros(out_shape, dtype=out_dtype)

        binding = session.io_binding()
        in_val = ort.OrtValue.ortvalue_from_numpy(self._input)
        out_val = ort.OrtValue.ortvalue_from_numpy(self._output)
        binding.bind_ortvalue_input(inp.name, in_val)
        binding.bind_ortvalue_output(out.name, out_val)
        self._ort_values = [in_val, out_val]
        self._binding = binding
        self._run_options = ort.RunOptions()

    def infer(self) -> np.ndarray:
        """Run on the input buffer; returns the preallocated output (valid until the next call)."""
        if self._session is None or self._output is None:
            raise self._not_loaded()
        try:
            self._session.run_with_iobinding(self._binding, self._run_options)
        except Exception as e:
            raise EngineError(f"{self.model_path}: onnxruntime inference failed: {e}") from e
        return self._output

    def close(self) -> None:
        self._binding = None
        self._ort_values = []
        self._session = None
        self._run_options = None
        self.info = None


_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
}
