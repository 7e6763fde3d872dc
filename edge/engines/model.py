"""Reading what a model is (`ModelInfo`) from its ONNX header and Ultralytics metadata.

Only the graph header is parsed (`onnx.load(..., load_external_data=False)`), never run.
Ultralytics writes string metadata props: `names` (a dict literal), `imgsz`, `stride`, `task`,
`batch`, `channels`, `end2end`. Models without them are described from their tensor shapes
and get classes named "class0", "class1", ... (or the configured `classes`).
`model_info_from_metadata` is the shared core, also used for OpenVINO IR models.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.engines.base import Layout, ModelInfo
from edge.errors import ModelError

Dim = int | None  # a static size, or None where the dimension is dynamic

# What the model's input is, where it is not the camera frame itself (absent: the frame).
INPUT_KIND_KEY = "edge_inspect_input"
REFERENCE_COMPOSITE = "reference-composite"
METADATA_KEYS = ("names", "imgsz", "stride", "task", "batch", "channels", "end2end", INPUT_KIND_KEY)


def file_sha256(*paths: str | Path) -> str:
    """Hex sha256 over the bytes of one or more files, in order."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def model_id_of(*paths: str | Path) -> str:
    """The model id: first 16 hex digits of the sha256 of the model file(s)."""
    return file_sha256(*paths)[:16]


def parse_names(value: str, where: str = "model") -> tuple[str, ...]:
    """Ultralytics `names` ("{0: 'a', 1: 'b'}" or "['a', 'b']") -> ("a", "b")."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
        raise ModelError(f"{where}: metadata 'names' is not a dict or list literal: {value!r}") from e
    if isinstance(parsed, Mapping):
        try:
            items = sorted((int(k), str(v)) for k, v in parsed.items())
        except (TypeError, ValueError) as e:
            raise ModelError(f"{where}: metadata 'names' keys must be class indices: {value!r}") from e
        if [k for k, _ in items] != list(range(len(items))):
            raise ModelError(f"{where}: metadata 'names' must be numbered 0..n-1, got {value!r}")
        return tuple(v for _, v in items)
    if isinstance(parsed, list | tuple):
        return tuple(str(v) for v in parsed)
    raise ModelError(f"{where}: metadata 'names' is not a dict or list: {value!r}")


def _literal(metadata: Mapping[str, str], key: str, where: str) -> Any:
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        if key == "task":
            return raw.strip()
        raise ModelError(f"{where}: metadata {key!r} cannot be parsed: {raw!r}") from None


def _int_meta(metadata: Mapping[str, str], key: str, where: str) -> int | None:
    v = _literal(metadata, key, where)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
        raise ModelError(f"{where}: metadata {key!r} must be an integer, got {metadata[key]!r}")
    return int(v)


def _bool_meta(metadata: Mapping[str, str], key: str) -> bool | None:
    raw = metadata.get(key)
    if raw is None:
        return None
    return raw.strip().lower() in ("true", "1", "yes")


def _imgsz(metadata: Mapping[str, str], where: str) -> tuple[int, int] | None:
    v = _literal(metadata, "imgsz", where)
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    raise ModelError(f"{where}: metadata 'imgsz' must be an int or [h, w], got {metadata['imgsz']!r}")


def _reference_input(metadata: Mapping[str, str], channels: int, where: str) -> bool:
    kind = metadata.get(INPUT_KIND_KEY)
    if kind is None:
        return False
    if kind != REFERENCE_COMPOSITE:
        raise ModelError(f"{where}: metadata {INPUT_KIND_KEY!r} is {kind!r}; known: {REFERENCE_COMPOSITE!r}")
    if channels != 3:
        raise ModelError(f"{where}: a reference-composite model needs 3 input channels, has {channels}")
    return True


def mark_reference_input(path: str | Path) -> None:
    """Record in an ONNX file that it takes golden-reference composites (`edge.reference`)."""
    import onnx

    model = onnx.load(str(path))
    props = [p for p in model.metadata_props if p.key != INPUT_KIND_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    prop = model.metadata_props.add()
    prop.key, prop.value = INPUT_KIND_KEY, REFERENCE_COMPOSITE
    onnx.save(model, str(path))


def model_info_from_metadata(
    *,
    path: str | Path,
    model_id: str,
    metadata: Mapping[str, str],
    input_shape: Sequence[Dim],
    input_dtype: np.dtype | type,
    output_shape: Sequence[Dim],
    expected_classes: Sequence[str] | None = None,
) -> ModelInfo:
    """Validate shapes and metadata of a detection model and describe it."""
    where = str(path)
    task = _literal(metadata, "task", where)
    if task is not None and str(task) != "detect":
        raise ModelError(f"{where}: task is {task!r}; only 'detect' models are supported")
    dtype = np.dtype(input_dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ModelError(f"{where}: input must be float32 or float16, got {dtype}")

    # input: (B, C, H, W)
    if len(input_shape) != 4:
        raise ModelError(f"{where}: input must be rank 4 (B, C, H, W), got shape {list(input_shape)}")
    b_in, c_in, h_in, w_in = input_shape
    channels_meta = _int_meta(metadata, "channels", where)
    channels = c_in if c_in is not None else channels_meta if channels_meta is not None else 3
    if channels_meta is not None and channels_meta != channels:
        raise ModelError(f"{where}: metadata says {channels_meta} channels, input has {channels}")
    if channels not in (1, 3):
        raise ModelError(f"{where}: input must have 1 or 3 channels, got {channels}")
    imgsz = _imgsz(metadata, where)
    if h_in is not None and w_in is not None:
        input_hw = (int(h_in), int(w_in))
    elif imgsz is not None:
        input_hw = imgsz
    else:
        raise ModelError(f"{where}: input size is dynamic and the model has no 'imgsz' metadata")
    batch_meta = _int_meta(metadata, "batch", where)
    batch = int(b_in) if b_in is not None else batch_meta if batch_meta is not None else 1

    # output: anchors (B, 4+nc, N) or end2end (B, K, 6)
    if len(output_shape) != 3:
        raise ModelError(
            f"{where}: unsupported output layout {list(output_shape)}; expected rank 3, "
            "(B, 4+nc, N) or end2end (B, K, 6)"
        )
    _, d1, d2 = output_shape
    names: tuple[str, ...] | None = None
    if "names" in metadata:
        names = parse_names(metadata["names"], where)
    end2end = _bool_meta(metadata, "end2end")
    layout: Layout
    if end2end is True or (end2end is None and d2 == 6):
        if d2 != 6:
            raise ModelError(f"{where}: metadata says end2end but the output is {list(output_shape)}, not (B, K, 6)")
        layout = "end2end"
        if names is None:
            if expected_classes is None:
                raise ModelError(f"{where}: end2end model without 'names' metadata; set the engine's `classes`")
            names = tuple(expected_classes)
    else:
        if d1 is None or d1 <= 4:
            raise ModelError(f"{where}: unsupported output layout {list(output_shape)}; expected (B, 4+nc, N)")
        layout = "anchors"
        nc = int(d1) - 4
        if names is None:
            if expected_classes is not None and len(expected_classes) == nc:
                names = tuple(expected_classes)
            else:
                names = tuple(f"class{i}" for i in range(nc))
        elif len(names) != nc:
            raise ModelError(
                f"{where}: metadata names {len(names)} classes but the output "
                f"{list(output_shape)} has {nc} (4 box rows + classes)"
            )
    if expected_classes is not None and tuple(expected_classes) != names:
        raise ModelError(
            f"{where}: model classes {list(names)} differ from the configured classes {list(expected_classes)}"
        )
    stride = _int_meta(metadata, "stride", where)
    reference_input = _reference_input(metadata, int(channels), where)
    return ModelInfo(
        path=str(path),
        model_id=model_id,
        names=names,
        input_hw=input_hw,
        channels=int(channels),
        batch=batch,
        layout=layout,
        input_dtype=dtype,
        stride=stride if stride is not None else 32,
        task="detect",
        reference_input=reference_input,
    )


def _onnx_dims(value_info: Any) -> list[Dim]:
    shape = value_info.type.tensor_type.shape
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in shape.dim]


def read_onnx_header(path: str | Path) -> tuple[dict[str, str], list[Dim], np.dtype, list[Dim]]:
    """(metadata props, input shape, input dtype, output shape) of an ONNX file."""
    import onnx
    from onnx import helper

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: model file not found (or not a file)")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"{p}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    graph = model.graph
    if not graph.input and not graph.output:
        raise ModelError(f"{p}: not an ONNX model (empty graph)")
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"{p}: expected exactly one input tensor, found {len(inputs)}")
    if not graph.output:
        raise ModelError(f"{p}: the model has no outputs")
    elem = inputs[0].type.tensor_type.elem_type
    try:
        in_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    except Exception as e:
        raise ModelError(f"{p}: unsupported input element type {elem}") from e
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    return metadata, _onnx_dims(inputs[0]), in_dtype, _onnx_dims(graph.output[0])


def read_model_info(path: str | Path, expected_classes: Sequence[str] | None = None) -> ModelInfo:
    """Describe the ONNX detection model at `path`; `ModelError` naming the file if unusable."""
    metadata, in_shape, in_dtype, out_shape = read_onnx_header(path)
    return model_info_from_metadata(
        path=path,
        model_id=model_id_of(path),
        metadata=metadata,
        input_shape=in_shape,
        input_dtype=in_dtype,
        output_shape=out_shape,
        expected_classes=expected_classes,
    )


def resolve_model_path(model: str, base_dir: Path | str) -> Path:
    """The model path from a config: `~` expanded, relative paths against the config's folder."""
    p = Path(model).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p
