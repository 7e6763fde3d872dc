"""Rewrite an Ultralytics detect head's DFL so its softmax runs over the last axis (a graph edit, no I/O).

Ultralytics exports the distribution focal loss (DFL) box decode as

    X (B, 4*R, N) -Reshape-> (B, 4, R, N) -Transpose(0,2,1,3)-> (B, R, 4, N) -Softmax(axis=1)->
      -Conv 1x1 (weights 0..R-1, no bias)-> (B, 1, 4, N) -Reshape-> (B, 4, N)

with R = 16 bins. ONNX Runtime's CPU softmax over a non-last axis transposes the tensor
element by element around a last-axis softmax: on yolo11n at 320x320 (N = 2100) that one node
took 1.6 of 12 ms, more than any convolution. `with_last_axis_dfl` replaces the five nodes by

    X -Transpose(0,2,1)-> (B, N, 4*R) -Reshape-> (B, N, 4, R) -Softmax(axis=-1)->
      -MatMul (R, 1)-> (B, N, 4, 1) -Reshape-> (B, N, 4) -Transpose(0,2,1)-> (B, 4, N)

whose transposes are plain 2-D ones (ORT's fast path) and whose softmax is over contiguous
rows: the same expectation over the same bins, bit-identical outputs on yolo11n (tested).
A model without the pattern (an end-to-end head, another exporter) is returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.onnx_edit.graph import GraphIndex, attribute, copy_for_edit, splice

_PREFIX = "edge_inspect_dfl_"


@dataclass(frozen=True)
class _Match:
    reshape_in: Any
    transpose: Any
    softmax: Any
    conv: Any
    reshape_out: Any
    weights: np.ndarray  # (R,) bin values


def _match(g: GraphIndex, softmax: Any) -> _Match | None:
    transpose = g.producer.get(softmax.input[0])
    if transpose is None or transpose.op_type != "Transpose" or list(attribute(transpose, "perm", [])) != [0, 2, 1, 3]:
        return None
    if len(g.read_by(transpose.output[0])) != 1 or attribute(softmax, "axis", -1) != 1:
        return None
    reshape_in = g.producer.get(transpose.input[0])
    if reshape_in is None or reshape_in.op_type != "Reshape" or len(g.read_by(reshape_in.output[0])) != 1:
        return None
    shape_in = g.constant(reshape_in.input[1])
    if shape_in is None or shape_in.shape != (4,) or int(shape_in[1]) != 4:
        return None
    conv = g.only_reader(softmax.output[0], "Conv")
    if conv is None or len(conv.input) != 2 or int(attribute(conv, "group", 1)) != 1:
        return None
    weights = g.constant(conv.input[1])
    bins = int(shape_in[2])
    if weights is None or weights.shape != (1, bins, 1, 1) or weights.dtype != np.float32:
        return None
    if any(int(v) != 1 for v in attribute(conv, "strides", [1, 1])) or any(
        int(v) for v in attribute(conv, "pads", [0] * 4)
    ):
        return None
    reshape_out = g.only_reader(conv.output[0], "Reshape")
    if reshape_out is None:
        return None
    shape_out = g.constant(reshape_out.input[1])
    if shape_out is None or shape_out.shape != (3,) or int(shape_out[1]) != 4:
        return None
    return _Match(reshape_in, transpose, softmax, conv, reshape_out, weights.reshape(bins))


def with_last_axis_dfl(model: Any, *, where: str = "model") -> tuple[Any, int]:
    """A copy of `model` (an `onnx.ModelProto`) with every DFL softmax moved to the last axis.

    Returns (model, how many DFL blocks were rewritten); 0 leaves an unchanged copy.
    Raises ModelError if the model already uses this module's node names.
    """
    from onnx import helper, numpy_helper

    out = copy_for_edit(model, _PREFIX, where)
    graph = out.graph
    g = GraphIndex(graph)
    matches = [m for m in (_match(g, n) for n in graph.node if n.op_type == "Softmax") if m is not None]
    if not matches:
        return out, 0

    replaced: dict[int, list[Any]] = {}  # id(reshape_out) -> new nodes, put where the old block ended
    removed: list[Any] = []
    for k, m in enumerate(matches):
        p = f"{_PREFIX}{k}_"
        bins = int(m.weights.shape[0])
        graph.initializer.extend(
            [
                numpy_helper.from_array(m.weights.reshape(bins, 1).astype(np.float32), p + "bins"),
                numpy_helper.from_array(np.array([0, 0, 4, bins], np.int64), p + "rows_shape"),
                numpy_helper.from_array(np.array([0, 0, 4], np.int64), p + "out_shape"),
            ]
        )
        replaced[id(m.reshape_out)] = [
            helper.make_node("Transpose", [m.reshape_in.input[0]], [p + "t"], perm=[0, 2, 1], name=p + "t"),
            helper.make_node("Reshape", [p + "t", p + "rows_shape"], [p + "rows"], name=p + "rows"),
            helper.make_node("Softmax", [p + "rows"], [p + "softmax"], axis=-1, name=p + "softmax"),
            helper.make_node("MatMul", [p + "softmax", p + "bins"], [p + "expect"], name=p + "expect"),
            helper.make_node("Reshape", [p + "expect", p + "out_shape"], [p + "sides"], name=p + "sides"),
            helper.make_node("Transpose", [p + "sides"], [m.reshape_out.output[0]], perm=[0, 2, 1], name=p + "out"),
        ]
        removed += [m.reshape_in, m.transpose, m.softmax, m.conv]

    params = {i for m in matches for i in (m.reshape_in.input[1], m.conv.input[1], m.reshape_out.input[1])}
    splice(graph, replaced, removed, params)
    return out, len(matches)
