"""INT8 post-training quantization of a YOLO ONNX model with NNCF, for the OpenVINO engine.

    ONNX --openvino.convert_model--> FP32 ov.Model --nncf.quantize(calibration frames)--> INT8 IR

Calibration frames are real images, each written by OUR `Preprocessor` into a tensor of the
model's input shape, so the activation ranges NNCF measures are those of exactly what the
engine will see at run time (letterbox, grey padding, RGB order, 1/255 scaling).

The post-processing part of an Ultralytics Detect head (DFL softmax/conv, anchor decoding,
stride multiply, class sigmoid and the final concat of boxes in pixels with scores in [0, 1])
stays in floating point through an NNCF ignored scope: quantizing it would cost box precision
and mix two value ranges in one quantizer, and it is a negligible share of the compute. The
branch convolutions are quantized as usual; `head_outputs_fp32` keeps the last 1x1 convolution of
each branch (box distribution, class logits) in floating point too (on the reference model it
changed neither part recall nor mAP50 measurably, so it is off by default).

The IR is written with the ONNX model's Ultralytics metadata (names, imgsz, stride, ...) in its
rt_info (`write_ir_metadata`), so `OpenVinoEngine` loads it with its class names, plus where it
came from (`source_model_id`, `quantization`).

Optionally (`recall_control`), `nncf.quantize_with_accuracy_control` keeps the part recall on the
defective images of a labelled split within `max_drop` of the FP32 model's, by reverting the most
harmful quantizers to floating point (slower to produce: minutes, and the INT8 model gets slower
with each reverted layer). Tuning on a split and reporting on the same split is optimistic: use a
split the comparison does not use where there is one.

`quantize_onnx` needs the `quantize` extra (nncf, openvino); nncf is imported only inside it.
`edge.quantization.int8_accuracy.compare_accuracy` measures FP32 and INT8 on a labelled split and
calibrates the INT8 model's own part thresholds.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cameras import labels as lbl
from edge.engines.base import ModelInfo
from edge.engines.letterbox import Preprocessor
from edge.engines.model import model_id_of, read_model_info, read_onnx_header
from edge.engines.openvino import import_openvino, write_ir_metadata
from edge.errors import DatasetError, EdgeInspectError, EngineUnavailableError, ModelError
from edge.reference import check_input_kind

log = logging.getLogger(__name__)

PRESETS = ("performance", "mixed")
DEFAULT_PRESET = "mixed"  # asymmetric activations: YOLO's SiLU outputs are not symmetric around 0
DEFAULT_CALIB_COUNT = 300
_HEAD_DFL = re.compile(r"^(.*/model\.\d+)/dfl/")


def _import_nncf() -> Any:
    try:
        import nncf
    except ImportError as e:
        raise EngineUnavailableError(
            "NNCF is not installed: INT8 quantization needs the 'quantize' extra (pip install 'edge-inspect[quantize]')"
        ) from e
    return nncf


def default_output(model: Path) -> Path:
    """`<dir>/<stem>-int8.xml` beside the ONNX model."""
    return model.with_name(f"{model.stem}-int8.xml")


def calibration_images(folder: Path, count: int = DEFAULT_CALIB_COUNT) -> list[Path]:
    """Up to `count` images from `folder` (recursively), evenly spread over the sorted list."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: calibration folder does not exist")
    if count < 1:
        raise DatasetError(f"calibration needs at least one image, asked for {count}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in lbl.IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"{folder}: no images ({', '.join(sorted(lbl.IMAGE_SUFFIXES))}) for calibration")
    if len(files) <= count:
        return files
    picks = np.unique(np.linspace(0, len(files) - 1, count).round().astype(np.int64))
    return [files[int(i)] for i in picks]


class CalibrationFrames:
    """Re-iterable calibration set: each image read and letterboxed by the shared Preprocessor.

    Yields a fresh (1, C, H, W) array per image (NNCF may hold on to it), of the model's input
    dtype. Images are read as BGR (a grey image gives three equal channels, which the
    Preprocessor turns into the same tensor as the mono frame a mono camera delivers).
    """

    def __init__(self, images: Sequence[Path], info: ModelInfo) -> None:
        self.images = list(images)
        self._buffer = np.zeros((1, info.channels, *info.input_hw), dtype=info.input_dtype)
        self._pre = Preprocessor(self._buffer[0])
        self._reference_input = info.reference_input
        self._checked = False

    def __len__(self) -> int:
        return len(self.images)

    def tensor(self, path: Path) -> np.ndarray:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise DatasetError(f"{path}: cannot decode calibration image")
        if not self._checked:  # calibrating on the wrong kind of image would skew every range
            check_input_kind(frame, self._reference_input, path)
            self._checked = True
        self._pre(frame)
        return self._buffer.copy()

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.images:
            yield self.tensor(path)


def yolo_head_ignored_patterns(op_names: Iterable[str], *, output_convs: bool = False) -> list[str]:
    """Regexes for the post-processing ops of an Ultralytics Detect head, from the op names.

    The head is the module holding `dfl` (e.g. `/model.23` in an ONNX export): its DFL ops and
    its direct child ops (Reshape, Concat, Slice, Sigmoid, Sub, Add, Div, Mul, ...) are left in
    floating point; its branch convolutions (`/model.23/cv2.*`, `cv3.*`) are not matched, except,
    with `output_convs`, the last 1x1 convolution of each branch (`cv2.i.2`, `cv3.i.2`: the box
    distribution and class logits themselves, a few percent of the compute).
    Empty when no such head is found (the whole model is then quantized).
    """
    heads = sorted({m.group(1) for n in op_names if (m := _HEAD_DFL.match(n))})
    patterns = [rf"^{re.escape(h)}/(dfl/.*|[A-Za-z]+(_\d+)?)$" for h in heads]
    if output_convs:
        patterns += [rf"^{re.escape(h)}/cv[23]\.\d+/cv[23]\.\d+\.2/.*$" for h in heads]
    return patterns


@dataclass(frozen=True)
class RecallControl:
    """Accuracy-controlled quantization: part recall on `split` of `data` may drop by `max_drop`."""

    data: Path
    split: str = "val"
    max_drop: float = 0.0
    thresholds: Mapping[str, float] | None = None  # None: the FP32 model's in force (sidecar or part_conf)
    part_conf: float = 0.25


class PartRecallValidator:
    """`validation_fn` for NNCF: the part recall of a compiled model over defective images.

    A part is rejected when any class's highest score reaches its threshold (the service's
    single-label decode, `class_max_scores`); returns (recall, one 0/1 value per image).
    """

    def __init__(self, info: ModelInfo, thresholds: np.ndarray) -> None:
        self.thresholds = np.asarray(thresholds, np.float32)
        self.layout = info.layout
        self.num_classes = info.num_classes
        self._buffer = np.zeros((1, info.channels, *info.input_hw), dtype=info.input_dtype)
        self._pre = Preprocessor(self._buffer[0])

    def __call__(self, compiled_model: Any, images: Iterable[Path]) -> tuple[float, list[float]]:
        from edge.training.runner import class_max_scores

        output = compiled_model.outputs[0]
        values: list[float] = []
        for path in images:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                raise DatasetError(f"{path}: cannot decode validation image")
            self._pre(frame)
            raw = compiled_model(self._buffer)[output]
            scores = class_max_scores(raw, layout=self.layout, num_classes=self.num_classes)
            values.append(float((scores >= self.thresholds).any()))
        return (float(np.mean(values)) if values else 0.0), values


def defective_images(data: Path, split: str) -> list[Path]:
    """Images of a labelled split whose label file holds at least one box."""
    from edge.training.evaluate import resolve_split

    sd = resolve_split(Path(data), split)
    out = []
    for image in sd.images:
        label = sd.labels_dir / f"{image.stem}.txt"
        if label.is_file() and label.read_text().strip():
            out.append(image)
    if not out:
        raise DatasetError(f"{sd.source}: split '{split}' has no defective images to control part recall on")
    return out


@dataclass
class QuantizeResult:
    """What `quantize_onnx` produced."""

    source: Path
    source_model_id: str
    xml: Path
    bin: Path
    model_id: str  # of the IR files (xml + bin), as OpenVinoEngine reports it
    names: tuple[str, ...]
    preset: str
    calibration_dir: Path
    calibration_images: int
    ignored_patterns: list[str]
    fake_quantize_ops: int
    seconds: float
    versions: dict[str, str]
    accuracy: dict[str, Any] | None = None
    sizes_bytes: dict[str, int] = field(default_factory=dict)
    recall_control: dict[str, Any] | None = None
    activations: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "source": str(self.source),
            "source_model_id": self.source_model_id,
            "xml": str(self.xml),
            "bin": str(self.bin),
            "model_id": self.model_id,
            "names": list(self.names),
            "preset": self.preset,
            "calibration": {"dir": str(self.calibration_dir), "images": self.calibration_images},
            "ignored_patterns": self.ignored_patterns,
            "fake_quantize_ops": self.fake_quantize_ops,
            "activations": self.activations,
            "seconds": round(self.seconds, 2),
            "sizes_bytes": self.sizes_bytes,
            "versions": self.versions,
        }
        if self.recall_control is not None:
            doc["recall_control"] = self.recall_control
        if self.accuracy is not None:
            doc["accuracy"] = self.accuracy
        return doc


SILU_INT8_NOTE = (
    "OpenVINO's INT8 convolutions on the CPU run a fused SiLU far slower than a fused ReLU (YOLO11n "
    "at 320 on a 2-core Xeon, full path: INT8 0.75-0.81x its FP32 with SiLU, 0.53-0.58x with AMX capped "
    "off, 0.39-0.40x with ReLU); for CPU INT8 speed train the model with ReLU (models/yolo11n-relu.yaml)"
)


def activation_counts(ov_model: Any) -> dict[str, int]:
    """SiLU (x * sigmoid(x), or Swish) and ReLU activations of an OpenVINO model (before compiling)."""
    silu = relu = 0
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Swish":
            silu += 1
        elif kind == "Relu":
            relu += 1
        elif kind == "Multiply":
            a, b = (op.input_value(i) for i in range(2))
            for x, y in ((a, b), (b, a)):
                node = y.get_node()
                if node.get_type_name() == "Sigmoid" and node.input_value(0) == x:
                    silu += 1
                    break
    return {"silu": silu, "relu": relu}


def quantize_onnx(
    model: Path,
    calib_dir: Path,
    *,
    out: Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
    preset: str = DEFAULT_PRESET,
    fast_bias_correction: bool = True,
    recall_control: RecallControl | None = None,
    head_outputs_fp32: bool = False,
) -> QuantizeResult:
    """Quantize an ONNX YOLO detection model to an INT8 OpenVINO IR (see the module doc)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    model = Path(model)
    nncf = _import_nncf()
    ov = import_openvino()
    info = read_model_info(model)  # validates the model (ModelError naming the file)
    metadata = read_onnx_header(model)[0]
    images = calibration_images(Path(calib_dir), calib_count)
    out = Path(out) if out is not None else default_output(model)
    if out.suffix.lower() != ".xml":
        raise ModelError(f"{out}: the INT8 model is written as OpenVINO IR: give a path ending in .xml")

    t0 = time.perf_counter()
    try:
        ov_model = ov.convert_model(str(model))
    except Exception as e:
        raise ModelError(f"{model}: OpenVINO could not convert the model: {e}") from e
    dims = [None if d.is_dynamic else int(d.get_length()) for d in ov_model.inputs[0].get_partial_shape()]
    if len(dims) == 4 and any(d is None for d in dims[1:]):  # dynamic size: fix it at the model's imgsz
        batch = dims[0] if dims[0] is not None else -1  # a dynamic batch stays dynamic (the engine sets it)
        shape = ov.PartialShape([batch, info.channels, info.input_hw[0], info.input_hw[1]])
        ov_model.reshape({ov_model.inputs[0].get_any_name(): shape})
    patterns = yolo_head_ignored_patterns(
        (op.get_friendly_name() for op in ov_model.get_ordered_ops()), output_convs=head_outputs_fp32
    )
    if not patterns:
        log.warning("%s: no Ultralytics Detect head (dfl) found; quantizing the whole model", model)
    activations = activation_counts(ov_model)
    if activations["silu"]:
        log.warning("%s: %d SiLU activations. %s", model, activations["silu"], SILU_INT8_NOTE)
    frames = CalibrationFrames(images, info)
    log.info(
        "quantizing %s (id %s) with NNCF %s, preset %s, %d calibration images from %s",
        model,
        info.model_id,
        nncf.__version__,
        preset,
        len(frames),
        calib_dir,
    )
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    if not log.isEnabledFor(logging.DEBUG):
        nncf_logger.setLevel(logging.WARNING)  # one INFO line per op otherwise
    common: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(preset),
        "subset_size": len(frames),
        "fast_bias_correction": fast_bias_correction,
        "ignored_scope": nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None,
    }
    control_doc: dict[str, Any] | None = None
    try:
        if recall_control is None:
            quantized = nncf.quantize(ov_model, nncf.Dataset(frames), **common)
        else:
            quantized, control_doc = _quantize_with_recall_control(
                nncf, ov_model, frames, info, model, recall_control, common
            )
    except EdgeInspectError:
        raise
    except Exception as e:
        raise ModelError(f"{model}: NNCF quantization failed: {e}") from e
    finally:
        nncf_logger.setLevel(level)

    fq = sum(1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    extra = {
        "source_model_id": info.model_id,
        "quantization": f"INT8 NNCF {nncf.__version__} preset={preset} calibration_images={len(frames)}"
        + (f" max_recall_drop={recall_control.max_drop}" if recall_control is not None else ""),
    }
    write_ir_metadata(quantized, {**metadata, **extra})
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    seconds = time.perf_counter() - t0
    bin_path = out.with_suffix(".bin")
    result = QuantizeResult(
        source=model,
        source_model_id=info.model_id,
        xml=out,
        bin=bin_path,
        model_id=model_id_of(out, bin_path),
        names=info.names,
        preset=preset,
        calibration_dir=Path(calib_dir),
        calibration_images=len(frames),
        ignored_patterns=patterns,
        fake_quantize_ops=fq,
        seconds=seconds,
        versions={"nncf": str(nncf.__version__), "openvino": str(ov.get_version())},
        sizes_bytes={"onnx": model.stat().st_size, "xml": out.stat().st_size, "bin": bin_path.stat().st_size},
        recall_control=control_doc,
        activations=activations,
    )
    log.info("wrote %s (id %s, %d FakeQuantize ops) in %.1f s", out, result.model_id, fq, seconds)
    return result


def _quantize_with_recall_control(
    nncf: Any,
    ov_model: Any,
    frames: CalibrationFrames,
    info: ModelInfo,
    model: Path,
    control: RecallControl,
    common: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """`nncf.quantize_with_accuracy_control` with part recall as the metric."""
    if control.thresholds is not None:
        thr = np.array([float(control.thresholds[n]) for n in info.names], np.float32)
        source = "given"
    else:
        from edge.training.evaluate import resolve_thresholds

        vec, source = resolve_thresholds(None, model, info.names, control.part_conf)
        thr = np.asarray(vec, np.float32)
    images = defective_images(control.data, control.split)
    validator = PartRecallValidator(info, thr)
    log.info(
        "accuracy control: part recall on %d defective images of %s/%s may drop by %s",
        len(images),
        control.data,
        control.split,
        control.max_drop,
    )
    quantized = nncf.quantize_with_accuracy_control(
        ov_model,
        nncf.Dataset(frames),
        nncf.Dataset(images),
        validator,
        max_drop=control.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        **common,
    )
    doc = {
        "metric": "part recall (single-label max score per class >= threshold)",
        "data": str(control.data),
        "split": control.split,
        "defective_images": len(images),
        "max_drop": control.max_drop,
        "thresholds": {n: round(float(t), 6) for n, t in zip(info.names, thr, strict=True)},
        "thresholds_source": source,
    }
    return quantized, doc


def with_accuracy(result: QuantizeResult, accuracy: dict[str, Any]) -> QuantizeResult:
    return dataclasses.replace(result, accuracy=accuracy)
