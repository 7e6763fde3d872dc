"""The DFL softmax moved to the last axis (edge.onnx_edit.dfl)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.errors import ModelError
from edge.onnx_edit.dfl import with_last_axis_dfl

pytest.importorskip("onnxruntime")

RunOnnx = Callable[[onnx.ModelProto, np.ndarray], list[np.ndarray]]

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "models").glob("*.onnx"))


def softmax_axes(model: onnx.ModelProto) -> list[int]:
    return [
        next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), -1)
        for n in model.graph.node
        if n.op_type == "Softmax"
    ]


def dfl_model(*, bins: int = 16, constant_nodes: bool = False, extra_output: bool = False) -> onnx.ModelProto:
    """The head's tail as Ultralytics exports it: X (B, 4*bins, N) -> DFL -> (B, 4, N), dynamic B and N."""
    f32 = TensorProto.FLOAT
    consts = {
        "shape_in": np.array([0, 4, bins, -1], np.int64),  # Ultralytics writes (1, 4, 16, anchors); any works
        "weight": np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1),
        "shape_out": np.array([0, 4, -1], np.int64),
    }
    nodes = []
    initializers = []
    for name, value in consts.items():
        if constant_nodes and name != "weight":
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name)))
        else:
            initializers.append(numpy_helper.from_array(value, name))
    nodes += [
        helper.make_node("Reshape", ["x", "shape_in"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["t"], ["s"], axis=1),
        helper.make_node("Conv", ["s", "weight"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["c", "shape_out"], ["boxes"]),
    ]
    outputs = [helper.make_tensor_value_info("boxes", f32, ["B", 4, "N"])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("s", f32, ["B", bins, 4, "N"]))
    graph = helper.make_graph(
        nodes, "dfl", [helper.make_tensor_value_info("x", f32, ["B", 4 * bins, "N"])], outputs, initializers
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def expected_dfl(x: np.ndarray, bins: int) -> np.ndarray:
    b, _, n = x.shape
    logits = x.reshape(b, 4, bins, n).astype(np.float64)
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    p = e / e.sum(axis=2, keepdims=True)
    return np.einsum("bskn,k->bsn", p, np.arange(bins, dtype=np.float64))


@pytest.mark.parametrize("constant_nodes", [False, True], ids=["initializers", "constant-nodes"])
@pytest.mark.parametrize(("batch", "anchors", "bins"), [(1, 2100, 16), (2, 37, 16), (1, 5, 8)])
def test_rewrite_computes_the_dfl_expectation(
    run_onnx: RunOnnx, constant_nodes: bool, batch: int, anchors: int, bins: int
) -> None:
    original = dfl_model(bins=bins, constant_nodes=constant_nodes)
    rewritten, count = with_last_axis_dfl(original)
    assert count == 1
    onnx.checker.check_model(rewritten, full_check=True)
    assert softmax_axes(rewritten) == [-1] and softmax_axes(original) == [1]  # the original is not modified
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Conv" not in ops and "Constant" not in ops  # the old block's weights and shapes are gone
    assert {t.name for t in rewritten.graph.initializer}.isdisjoint({"shape_in", "weight", "shape_out"})
    x = (np.random.default_rng(batch * 100 + anchors).standard_normal((batch, 4 * bins, anchors)) * 4).astype(
        np.float32
    )
    (got,) = run_onnx(rewritten, x)
    assert got.shape == (batch, 4, anchors)
    np.testing.assert_allclose(got, run_onnx(original, x)[0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got, expected_dfl(x, bins), rtol=1e-5, atol=1e-5)


def test_a_block_whose_tensors_are_read_elsewhere_is_left_alone() -> None:
    shared = dfl_model(extra_output=True)  # the softmax output is also a graph output
    rewritten, count = with_last_axis_dfl(shared)
    assert count == 0 and rewritten == shared and rewritten is not shared


def test_other_weights_or_axes_are_not_dfl() -> None:
    model = dfl_model()
    (weight,) = [t for t in model.graph.initializer if t.name == "weight"]
    weight.CopyFrom(numpy_helper.from_array(np.ones((2, 16, 1, 1), np.float32), "weight"))  # two outputs
    assert with_last_axis_dfl(model)[1] == 0
    other_axis = dfl_model()
    softmax = next(n for n in other_axis.graph.node if n.op_type == "Softmax")
    softmax.attribute[0].i = 3
    assert with_last_axis_dfl(other_axis)[1] == 0


def test_refuses_a_model_using_its_names() -> None:
    model = dfl_model()
    model.graph.node[0].output[0] = "edge_inspect_dfl_0_t"
    model.graph.node[1].input[0] = "edge_inspect_dfl_0_t"
    with pytest.raises(ModelError, match="edge_inspect_dfl_"):
        with_last_axis_dfl(model, where="m.onnx")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_models_have_one_dfl_and_keep_their_outputs(path: Path, run_onnx: RunOnnx) -> None:
    original = onnx.load(str(path))
    rewritten, count = with_last_axis_dfl(original, where=str(path))
    assert count == 1
    onnx.checker.check_model(rewritten)
    assert 1 not in softmax_axes(rewritten)  # the attention softmax (last axis) is untouched
    dims = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(dims, dtype=np.float32)
    np.testing.assert_allclose(run_onnx(rewritten, x)[0], run_onnx(original, x)[0], rtol=1e-5, atol=1e-4)
