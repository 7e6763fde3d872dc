"""Put a uint8 camera-pixel input in front of an ONNX detection model (a graph edit, no I/O).

`with_pixel_input(model)` returns a copy of the model whose input is the letterboxed frame as
the camera delivers it, (B, H, W, C) uint8 with colour in BGR order, and whose first nodes do
what `Preprocessor` otherwise does in numpy for the float input:

    pixels -Transpose(0,3,1,2)-> NCHW -Gather([2,1,0], axis 1)-> RGB -Cast-> float -Div 255-> input

Transposing and swapping channels on bytes before the cast moves a quarter of the data; the
division is the same float32 division the float path does, so the model sees bit-identical
numbers (tested). ONNX Runtime runs these nodes multithreaded, faster than numpy's strided
divide in Python.

TensorRT takes a uint8 network input only into a Cast (UINT8 is an I/O type there, not one its
layers compute in), so `cast_first=True` orders the nodes Cast, Transpose, Gather, Div: the same
numbers, since moving bytes or floats around is exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.onnx_edit.graph import copy_for_edit

PIXEL_INPUT = "camera_pixels_u8"
_PREFIX = "edge_inspect_pixels_"


def _graph_inputs(graph: Any) -> list[Any]:
    """The graph's real inputs (old IR versions also list initializers as inputs)."""
    initializers = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def with_pixel_input(model: Any, *, where: str = "model", cast_first: bool = False) -> Any:
    """A copy of `model` (an `onnx.ModelProto`) that takes (B, H, W, C) uint8 BGR pixels.

    C is the model's channel count (1 or 3; a 1-channel model gets no channel swap). The input
    is named `PIXEL_INPUT`; the batch, height and width dims are the model's (fixed or named).
    `cast_first` converts the bytes to float before reordering them (for TensorRT).
    Raises ModelError for a model that does not take one float (B, C, H, W) tensor.
    """
    from onnx import TensorProto, helper

    out = copy_for_edit(model, _PREFIX, where, reserved=(PIXEL_INPUT,))
    graph = out.graph
    inputs = _graph_inputs(graph)
    if len(inputs) != 1:
        raise ModelError(f"{where}: a pixel input needs a model with exactly one input, found {len(inputs)}")
    (old,) = inputs
    tensor_type = old.type.tensor_type
    float_types = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}
    if tensor_type.elem_type not in float_types:
        raise ModelError(f"{where}: input {old.name!r} is not float32 or float16; cannot add a pixel input")
    dims = list(tensor_type.shape.dim)
    if len(dims) != 4:
        raise ModelError(f"{where}: input {old.name!r} must be 4-D (B, C, H, W), got {len(dims)} dims")
    channels_dim = dims[1]
    if not channels_dim.HasField("dim_value") or channels_dim.dim_value not in (1, 3):
        raise ModelError(f"{where}: input {old.name!r} must have a fixed channel count of 1 or 3")
    channels = int(channels_dim.dim_value)

    new_input = helper.make_tensor_value_info(PIXEL_INPUT, TensorProto.UINT8, None)
    new_dims = new_input.type.tensor_type.shape.dim
    for src in (dims[0], dims[2], dims[3], dims[1]):  # B, H, W, C
        new_dims.add().CopyFrom(src)
    dtype = float_types[tensor_type.elem_type]
    scale = helper.make_tensor(
        _PREFIX + "255", tensor_type.elem_type, [], np.asarray([255.0], dtype).tobytes(), raw=True
    )
    nodes: list[Any] = []
    last = PIXEL_INPUT

    def cast() -> None:
        nonlocal last
        nodes.append(helper.make_node("Cast", [last], [_PREFIX + "float"], to=tensor_type.elem_type))
        last = _PREFIX + "float"

    if cast_first:
        cast()
    nodes.append(helper.make_node("Transpose", [last], [_PREFIX + "nchw"], perm=[0, 3, 1, 2]))
    last = _PREFIX + "nchw"
    if channels == 3:
        swap = helper.make_tensor(_PREFIX + "bgr_to_rgb", TensorProto.INT64, [3], [2, 1, 0])
        graph.initializer.append(swap)
        nodes.append(helper.make_node("Gather", [last, swap.name], [_PREFIX + "rgb"], axis=1))
        last = _PREFIX + "rgb"
    if not cast_first:
        cast()
    nodes.append(helper.make_node("Div", [last, scale.name], [old.name]))
    graph.initializer.append(scale)

    kept = [i for i in graph.input if i.name != old.name]
    del graph.input[:]
    graph.input.extend([new_input, *kept])
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    return out
