"""OpenVINO engine: one compiled model, one infer request, zero-copy input and output.

The input tensor is an `ov.Tensor` over a preallocated numpy array (`shared_memory=True`), so
the shared preprocessing writes straight into what the plugin reads; the output is bound the
same way, so `infer()` returns the same array each call, with no copy.

With `fuse_preprocess` (the default) the model gets a uint8 NHWC BGR input through OpenVINO's
`PrePostProcessor` (convert to float, reverse channels, / 255, to NCHW: compiled into the
model as a transpose and one fused elementwise kernel before the first convolution), so the
input array is (B, H, W, C) uint8 pixels.

Models: ONNX (metadata from the ONNX header), or OpenVINO IR (`.xml` + `.bin`, e.g. an INT8
model). For IR the metadata comes from the model's rt_info — section `model_info` (what
`write_ir_metadata` writes, with Ultralytics' `labels` as a fallback for names), else section
`framework` (what OpenVINO keeps from an ONNX it converted) — or else from the ONNX with the
same stem next to it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge.engines.base import EngineConfigBase, ModelInfo
from edge.engines.buffered import FUSE_PREPROCESS_HELP, BufferedEngine
from edge.engines.host import CAP_HELP, CpuIsaCap, apply_cap, check_cap, kernels, summary
from edge.engines.model import (
    METADATA_KEYS,
    Dim,
    model_id_of,
    model_info_from_metadata,
    read_model_info,
    read_onnx_header,
    resolve_model_path,
)
from edge.errors import EngineError, EngineUnavailableError, ModelError

log = logging.getLogger(__name__)


class OpenVinoEngineConfig(EngineConfigBase):
    """Run the model with OpenVINO (Intel CPU, iGPU, NPU)."""

    type: Literal["openvino"] = "openvino"
    device: str = Field("CPU", description="OpenVINO device: CPU, GPU, NPU, AUTO, ...")
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    num_threads: int | None = Field(None, ge=0, description="INFERENCE_NUM_THREADS (unset: all cores).")
    num_streams: int | None = Field(None, ge=1, description="NUM_STREAMS (unset: from the hint).")
    cache_dir: str | None = Field(None, description="Compiled-model cache folder (faster restarts).")
    precision_hint: Literal["f32", "bf16", "f16", "device"] | None = Field(
        None,
        description=(
            "INFERENCE_PRECISION_HINT. Unset: f32 on CPU (the precision the thresholds were "
            "calibrated at; OpenVINO would otherwise run bf16 on CPUs with AMX and move scores), "
            "the device's own default elsewhere. 'device': always the device's default."
        ),
    )
    max_cpu_isa: CpuIsaCap | None = Field(None, description=CAP_HELP)
    fuse_preprocess: bool = Field(True, description=FUSE_PREPROCESS_HELP)

    def build(self, base_dir: Path) -> OpenVinoEngine:
        return OpenVinoEngine(self, resolve_model_path(self.model, base_dir))


def import_openvino() -> Any:
    """The `openvino` module; EngineUnavailableError naming how to install it where it is missing."""
    try:
        import openvino
    except ImportError as e:
        raise EngineUnavailableError(
            "OpenVINO is not installed (pip install openvino, or the 'quantize' extra for INT8 quantization)"
        ) from e
    return openvino


def write_ir_metadata(ov_model: Any, metadata: Mapping[str, str]) -> None:
    """Store Ultralytics-style metadata (names, imgsz, ...) as strings in rt_info `model_info`.

    For tools that write IR models (the INT8 quantizer): `OpenVinoEngine` reads it back.
    """
    for key, value in metadata.items():
        ov_model.set_rt_info(str(value), ["model_info", key])


def _rt_section(ov_model: Any, section: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in (*METADATA_KEYS, "labels"):
        path = [section, key]
        if ov_model.has_rt_info(path):
            out[key] = str(ov_model.get_rt_info(path).astype(str))
    if section == "model_info" and "names" not in out and "labels" in out:
        # Ultralytics' OpenVINO export: labels as a space-separated list
        out["names"] = repr(out["labels"].split())
    out.pop("labels", None)
    return out


def with_pixel_input(ov: Any, ov_model: Any, channels: int) -> Any:
    """`ov_model` taking (B, H, W, C) uint8 BGR pixels: float, RGB, / 255 and NCHW done inside."""
    ppp = ov.preprocess.PrePostProcessor(ov_model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    inp.model().set_layout(ov.Layout("NCHW"))
    steps = inp.preprocess()
    steps.convert_element_type()  # to the model's own float type
    if channels == 3:
        steps.reverse_channels()
    steps.scale(255.0)
    return ppp.build()


def _partial_dims(pshape: Any) -> list[Dim]:
    return [None if d.is_dynamic else int(d.get_length()) for d in pshape]


def ir_model_info(path: Path, ov_model: Any, expected_classes: list[str] | None) -> ModelInfo:
    """ModelInfo of an OpenVINO IR model (already read into `ov_model`)."""
    metadata = _rt_section(ov_model, "model_info")
    if "names" not in metadata:
        metadata = {**_rt_section(ov_model, "framework"), **metadata}
    sibling = path.with_suffix(".onnx")
    if "names" not in metadata and sibling.is_file():
        metadata = {**read_onnx_header(sibling)[0], **metadata}
    if len(ov_model.inputs) != 1:
        raise ModelError(f"{path}: expected exactly one input tensor, found {len(ov_model.inputs)}")
    inp, out = ov_model.inputs[0], ov_model.outputs[0]
    bin_path = path.with_suffix(".bin")
    files = [path, bin_path] if bin_path.is_file() else [path]
    return model_info_from_metadata(
        path=path,
        model_id=model_id_of(*files),
        metadata=metadata,
        input_shape=_partial_dims(inp.get_partial_shape()),
        input_dtype=inp.get_element_type().to_dtype(),
        output_shape=_partial_dims(out.get_partial_shape()),
        expected_classes=expected_classes,
    )


class OpenVinoEngine(BufferedEngine[OpenVinoEngineConfig]):
    """An `Engine` over an OpenVINO compiled model with one infer request."""

    runtime = "openvino"

    def __init__(self, config: OpenVinoEngineConfig, model_path: Path) -> None:
        super().__init__(config, model_path)
        self._compiled: Any = None
        self._request: Any = None
        self._tensors: list[Any] = []
        self.kernels: dict[str, int] = {}  # compute layers per CPU kernel (empty on other devices)

    @property
    def version(self) -> str:
        return str(import_openvino().get_version())

    def compile_properties(self) -> dict[str, Any]:
        cfg = self.config
        props: dict[str, Any] = {"PERFORMANCE_HINT": cfg.performance_hint}
        if cfg.num_threads is not None:
            props["INFERENCE_NUM_THREADS"] = cfg.num_threads
        if cfg.num_streams is not None:
            props["NUM_STREAMS"] = cfg.num_streams
        if cfg.cache_dir is not None:
            props["CACHE_DIR"] = str(Path(cfg.cache_dir).expanduser())
        precision = cfg.precision_hint
        if precision is None and cfg.device.upper() == "CPU":
            precision = "f32"
        if precision is not None and precision != "device":
            props["INFERENCE_PRECISION_HINT"] = precision
        return props

    def load(self) -> ModelInfo:
        if self.info is not None:
            return self.info
        ov = import_openvino()
        p = self.model_path
        if not p.is_file():
            raise ModelError(f"{p}: model file not found (or not a file)")
        is_ir = p.suffix.lower() == ".xml"
        info = None if is_ir else read_model_info(p, self.config.classes)
        with self._closed_on_failure("OpenVINO"):
            core = ov.Core()
            model = core.read_model(str(p))
            if is_ir:
                info = ir_model_info(p, model, self.config.classes)
            assert info is not None
            self._open(ov, core, model, info)
        self.info = dataclasses.replace(info, batch=self.config.batch)
        for _ in range(self.config.warmup):
            self.infer()
        log.info(
            "openvino %s loaded %s (id %s) on %s with %s: input %s %s, output %s; kernels: %s",
            ov.get_version(),
            p,
            info.model_id,
            self.config.device,
            self.compile_properties(),
            self._input.shape if self._input is not None else None,
            self._input.dtype if self._input is not None else None,
            self._output.shape if self._output is not None else None,
            summary(self.kernels) or "n/a",
        )
        return self.info

    def _open(self, ov: Any, core: Any, model: Any, info: ModelInfo) -> None:
        cfg = self.config
        dims = _partial_dims(model.inputs[0].get_partial_shape())
        want = list(self._checked_input_shape(dims, info))
        if any(d is None for d in dims):
            model.reshape({model.inputs[0].get_any_name(): want})
        if cfg.fuse_preprocess:
            model = with_pixel_input(ov, model, info.channels)
        on_cpu = cfg.device.upper() == "CPU"
        if cfg.max_cpu_isa is not None and on_cpu:
            apply_cap(cfg.max_cpu_isa)
        compiled = core.compile_model(model, cfg.device, self.compile_properties())
        if on_cpu:
            self.kernels = dict(kernels(compiled))
            if cfg.max_cpu_isa is not None:
                check_cap(self.kernels, cfg.max_cpu_isa, str(self.model_path))
        request = compiled.create_infer_request()
        c_in, c_out = compiled.inputs[0], compiled.outputs[0]
        self._input = self._allocate_input(
            (want[0], want[1], want[2], want[3]), c_in.get_element_type().to_dtype(), pixels=cfg.fuse_preprocess
        )
        in_tensor = ov.Tensor(self._input, shared_memory=True)
        request.set_input_tensor(in_tensor)
        out_shape = [int(d) for d in c_out.get_shape()]
        out_arr = np.zeros(out_shape, dtype=c_out.get_element_type().to_dtype())
        try:
            out_tensor = ov.Tensor(out_arr, shared_memory=True)
            request.set_output_tensor(out_tensor)
            self._tensors = [in_tensor, out_tensor]
            self._output = out_arr
        except Exception:  # a device that will not write into host memory: use its own tensor
            log.debug("openvino %s: using the plugin's output tensor", cfg.device)
            request.infer()
            self._tensors = [in_tensor]
            self._output = request.get_output_tensor(0).data
        self._compiled = compiled
        self._request = request

    def infer(self) -> np.ndarray:
        """Run on the input buffer; returns the bound output array (valid until the next call)."""
        if self._request is None or self._output is None:
            raise self._not_loaded()
        try:
            # synchronous infer releases the GIL; shared outputs: no copies, only small views.
            # (start_async + wait looks leaner but leaks ~120 bytes per call in OpenVINO 2026.4)
            self._request.infer(share_inputs=True, share_outputs=True)
        except Exception as e:
            raise EngineError(f"{self.model_path}: OpenVINO inference failed: {e}") from e
        return self._output

    def close(self) -> None:
        self._request = None
        self._compiled = None
        self._tensors = []
        self.info = None
