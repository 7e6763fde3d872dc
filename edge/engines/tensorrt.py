"""TensorRT engine (NVIDIA GPU, Jetson): TensorRT 10 name-based tensor API with pycuda.

`load()` builds a TensorRT engine from the ONNX model once (FP16 when asked and supported) and
caches the serialized plan in `engine_cache_dir`, keyed by model hash, TensorRT version and
GPU name, so restarts only deserialize it. Host buffers are page-locked (pycuda
`pagelocked_empty`) and the input buffer *is* the engine's `input_buffer()`: `infer()` copies
it to the device, runs `execute_async_v3` on a private stream, copies the output back into
the page-locked output array and synchronises.

With `fuse_preprocess` (the default) the network takes the letterboxed uint8 BGR pixels,
(B, H, W, C), and casts, reorders and scales them on the GPU as its first layers
(`edge.onnx_edit.pixel_input`, Cast first: TensorRT takes UINT8 only as an I/O type): the copy to
the device is a quarter of the float tensor's bytes and the CPU does no float pass.

`tensorrt` and `pycuda` are imported inside `load()` only; without them `load()` raises
`EngineUnavailableError` and this module still imports.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge.engines.base import EngineConfigBase, ModelInfo
from edge.engines.buffered import FUSE_PREPROCESS_HELP, BufferedEngine
from edge.engines.model import read_model_info, resolve_model_path
from edge.errors import EdgeInspectError, EngineError, EngineUnavailableError
from edge.onnx_edit.pixel_input import with_pixel_input

log = logging.getLogger(__name__)


class TensorRtEngineConfig(EngineConfigBase):
    """Run the model with TensorRT on an NVIDIA GPU."""

    type: Literal["tensorrt"] = "tensorrt"
    engine_cache_dir: str = Field(
        "~/.cache/edge-inspect/tensorrt",
        description="Folder for built engine plans (keyed by model hash, TensorRT version, GPU).",
    )
    fp16: bool = Field(True, description="Allow FP16 kernels where the GPU supports them.")
    workspace_mb: int = Field(1024, ge=16, description="Builder workspace memory pool limit (MiB).")
    device: int = Field(0, ge=0, description="CUDA device index.")
    fuse_preprocess: bool = Field(
        True, description=FUSE_PREPROCESS_HELP + " On TensorRT the copy to the GPU is a quarter of the bytes."
    )

    def build(self, base_dir: Path) -> TensorRtEngine:
        return TensorRtEngine(self, resolve_model_path(self.model, base_dir))


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or EngineUnavailableError saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EngineUnavailableError("TensorRT is not installed (pip install tensorrt, or JetPack on Jetson)") from e
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise EngineUnavailableError("TensorRT needs pycuda, which is not installed (pip install pycuda)") from e
    return trt, cuda


def plan_file_name(
    model_id: str, trt_version: str, gpu_name: str, fp16: bool, batch: int, *, pixels: bool = False
) -> str:
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return f"{model_id}-trt{trt_version}-{gpu}-{'fp16' if fp16 else 'fp32'}-b{batch}{'-u8in' if pixels else ''}.plan"


def network_source(model_path: Path, *, pixels: bool) -> bytes:
    """The ONNX bytes TensorRT parses: the model file, or the model behind a uint8 pixel input."""
    if not pixels:
        return model_path.read_bytes()
    import onnx

    fused = with_pixel_input(onnx.load(str(model_path)), where=str(model_path), cast_first=True)
    return bytes(fused.SerializeToString())


def network_input_shape(shape: tuple[int, int, int, int], *, pixels: bool) -> tuple[int, int, int, int]:
    """The network's input shape for the model's (B, C, H, W): itself, or (B, H, W, C) pixels."""
    b, c, h, w = shape
    return (b, h, w, c) if pixels else shape


class TensorRtEngine(BufferedEngine[TensorRtEngineConfig]):
    """An `Engine` over a TensorRT execution context with page-locked host buffers."""

    runtime = "tensorrt"

    def __init__(self, config: TensorRtEngineConfig, model_path: Path) -> None:
        super().__init__(config, model_path)
        self.plan_path: Path | None = None
        self._trt: Any = None
        self._cuda: Any = None
        self._ctx: Any = None  # the device's primary CUDA context (retained)
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._d_input: Any = None
        self._d_output: Any = None
        self._extra: list[Any] = []

    def load(self) -> ModelInfo:
        if self.info is not None:
            return self.info
        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        info = read_model_info(self.model_path, self.config.classes)
        with self._closed_on_failure("TensorRT"):
            cuda.init()
            if cuda.Device.count() <= self.config.device:
                raise EngineUnavailableError(f"no CUDA device {self.config.device} on this host")
            dev = cuda.Device(self.config.device)
            self._ctx = dev.retain_primary_context()
            self._ctx.push()
            try:
                self._open(trt, cuda, info, dev.name())
            finally:
                self._ctx.pop()
        self.info = dataclasses.replace(info, batch=self.config.batch)
        for _ in range(self.config.warmup):
            self.infer()
        log.info(
            "tensorrt %s loaded %s (id %s, plan %s): input %s, output %s",
            trt.__version__,
            self.model_path,
            info.model_id,
            self.plan_path,
            self._input.shape if self._input is not None else None,
            self._output.shape if self._output is not None else None,
        )
        return self.info

    def _plan(self, trt: Any, info: ModelInfo, gpu_name: str, logger: Any) -> bytes:
        cfg = self.config
        cache_dir = Path(cfg.engine_cache_dir).expanduser()
        self.plan_path = cache_dir / plan_file_name(
            info.model_id, trt.__version__, gpu_name, cfg.fp16, cfg.batch, pixels=cfg.fuse_preprocess
        )
        if self.plan_path.is_file():
            log.info("tensorrt: using cached plan %s", self.plan_path)
            return self.plan_path.read_bytes()
        log.info("tensorrt: building a plan for %s (takes minutes on Jetson)", self.model_path)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        # the path lets the parser find external weights beside the file
        if not parser.parse(network_source(self.model_path, pixels=cfg.fuse_preprocess), str(self.model_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"{self.model_path}: TensorRT could not parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
        if cfg.fp16:
            if getattr(builder, "platform_has_fast_fp16", True):
                config.set_flag(trt.BuilderFlag.FP16)
            else:
                log.warning("tensorrt: fp16 requested but %s has no fast FP16; building FP32", gpu_name)
        inp = network.get_input(0)
        shape = network_input_shape(self._configured_input_shape(info), pixels=cfg.fuse_preprocess)
        if any(d < 0 for d in inp.shape):  # dynamic dims: one fixed-shape optimisation profile
            profile = builder.create_optimization_profile()
            profile.set_shape(inp.name, shape, shape, shape)
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"{self.model_path}: TensorRT failed to build an engine")
        data = bytes(plan)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.plan_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, self.plan_path)
        return data

    def _open(self, trt: Any, cuda: Any, info: ModelInfo, gpu_name: str) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        plan = self._plan(trt, info, gpu_name, logger)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"{self.model_path}: TensorRT could not deserialize {self.plan_path}")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise EngineError(f"{self.model_path}: expected one input and an output, got {names}")
        in_name, out_name = inputs[0], outputs[0]
        pixels = self.config.fuse_preprocess
        in_shape = network_input_shape(self._configured_input_shape(info), pixels=pixels)
        engine_in = tuple(engine.get_tensor_shape(in_name))
        if any(d < 0 for d in engine_in):
            context.set_input_shape(in_name, in_shape)
        elif engine_in != in_shape:
            raise EngineError(f"{self.model_path}: the engine input is {engine_in}, configured {in_shape}")
        out_shape = tuple(int(d) for d in context.get_tensor_shape(out_name))
        in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(in_name)))
        if pixels and in_dtype != np.uint8:
            raise EngineError(f"{self.model_path}: the engine's pixel input is {in_dtype}, expected uint8")
        out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(out_name)))
        self._input = cuda.pagelocked_empty(in_shape, in_dtype)
        self._output = cuda.pagelocked_empty(out_shape, out_dtype)
        assert self._input is not None and self._output is not None
        self._input.fill(0)
        self._d_input = cuda.mem_alloc(self._input.nbytes)
        self._d_output = cuda.mem_alloc(self._output.nbytes)
        context.set_tensor_address(in_name, int(self._d_input))
        context.set_tensor_address(out_name, int(self._d_output))
        # any further outputs still need an address; give each its own device buffer
        self._extra.clear()
        for name in outputs[1:]:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
            buf = cuda.mem_alloc(max(nbytes, 1))
            self._extra.append(buf)
            context.set_tensor_address(name, int(buf))
        self._stream = cuda.Stream()
        self._engine, self._context = engine, context

    def infer(self) -> np.ndarray:
        """H2D copy, execute_async_v3, D2H copy, synchronise; returns the page-locked output."""
        if self._context is None or self._output is None:
            raise self._not_loaded()
        cuda = self._cuda
        self._ctx.push()  # make the context current on the calling (worker) thread
        try:
            cuda.memcpy_htod_async(self._d_input, self._input, self._stream)
            if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                raise EngineError(f"{self.model_path}: TensorRT execute_async_v3 failed")
            cuda.memcpy_dtoh_async(self._output, self._d_output, self._stream)
            self._stream.synchronize()
        except EdgeInspectError:
            raise
        except Exception as e:
            raise EngineError(f"{self.model_path}: TensorRT inference failed: {e}") from e
        finally:
            self._ctx.pop()
        return self._output

    def close(self) -> None:
        if self._ctx is not None:
            try:
                self._ctx.push()
                self._context = None
                self._engine = None
                self._d_input = self._d_output = None
                self._extra = []
                self._stream = None
            finally:
                self._ctx.pop()
                self._ctx.detach()
        self._ctx = None
        self._context = None
        self._engine = None
        self.info = None
