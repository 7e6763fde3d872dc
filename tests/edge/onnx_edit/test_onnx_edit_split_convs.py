"""Channel Splits folded into the convolution before them (edge.onnx_edit.split_convs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.errors import ModelError
from edge.onnx_edit.split_convs import with_split_convs

pytest.importorskip("onnxruntime")

RunOnnx = Callable[[onnx.ModelProto, np.ndarray], list[np.ndarray]]

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "models").glob("*.onnx"))
F32 = TensorProto.FLOAT


def block(
    *,
    act: str = "silu",
    sizes: list[int] | None = None,
    how: str = "input",
    bias: bool = True,
    group: int = 1,
    axis: int = 1,
    conv_output_too: bool = False,
    mul_swapped: bool = False,
    opset: int = 17,
) -> onnx.ModelProto:
    """x (1, 8, 6, 5) -Conv 3x3 (32 out)-> act -Split-> parts, each read by its own Relu (like a C2f block)."""
    rng = np.random.default_rng(3)
    sizes = sizes or [16, 16]
    inits = [numpy_helper.from_array(rng.standard_normal((32, 8 // group, 3, 3)).astype(np.float32), "w")]
    conv_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b"))
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group)]
    if act == "silu":
        nodes.append(helper.make_node("Sigmoid", ["c"], ["s"]))
        nodes.append(helper.make_node("Mul", ["s", "c"] if mul_swapped else ["c", "s"], ["a"]))
    elif act == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["a"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["a"]))
    split_in = "c" if act == "none" else "a"
    if act == "none":
        nodes.pop()
    outs = [f"p{i}" for i in range(len(sizes))]
    if how == "input":
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        nodes.append(helper.make_node("Split", [split_in, "sizes"], outs, axis=axis))
    elif how == "attribute":
        nodes.append(helper.make_node("Split", [split_in], outs, axis=axis, split=sizes))
    else:  # equal parts, no sizes given
        nodes.append(helper.make_node("Split", [split_in], outs, axis=axis))
    nodes += [helper.make_node("Relu", [o], [f"y{i}"]) for i, o in enumerate(outs)]
    shapes = [[1, s, 6, 5] for s in sizes] if axis == 1 else [[1, 32, s, 5] for s in sizes]
    outputs = [helper.make_tensor_value_info(f"y{i}", F32, shape) for i, shape in enumerate(shapes)]
    if conv_output_too:
        outputs.append(helper.make_tensor_value_info("c", F32, [1, 32, 6, 5]))
    graph = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", F32, [1, 8, 6, 5])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


X = np.random.default_rng(0).standard_normal((1, 8, 6, 5)).astype(np.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"act": "silu"},
        {"act": "silu", "mul_swapped": True},
        {"act": "relu"},
        {"act": "none"},
        {"act": "silu", "bias": False},
        {"act": "relu", "sizes": [8, 24]},
        {"act": "silu", "sizes": [16, 8, 8], "how": "attribute", "opset": 11},
        {"act": "silu", "how": "equal"},
    ],
    ids=["silu", "silu-mul-swapped", "relu", "no-activation", "no-bias", "unequal", "attribute-sizes", "equal-parts"],
)
def test_fold_keeps_every_output(kwargs: dict[str, object], run_onnx: RunOnnx) -> None:
    original = block(**kwargs)  # type: ignore[arg-type]
    folded, count = with_split_convs(original)
    assert count == 1
    onnx.checker.check_model(folded, full_check=True)
    parts = len(original.graph.output)
    assert "Split" not in ops(folded) and ops(folded).count("Conv") == parts
    assert "Split" in ops(original)  # the original is not modified
    assert {t.name for t in folded.graph.initializer}.isdisjoint({"w", "b", "sizes"})  # old weights are gone
    got, want = run_onnx(folded, X), run_onnx(original, X)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{"group": 2}, {"axis": 2, "sizes": [3, 3]}, {"conv_output_too": True}],
    ids=["grouped-conv", "not-channels", "conv-output-read-elsewhere"],
)
def test_other_splits_are_left_alone(kwargs: dict[str, object]) -> None:
    model = block(**kwargs)  # type: ignore[arg-type]
    folded, count = with_split_convs(model)
    assert count == 0 and folded == model


def test_refuses_a_model_using_its_names() -> None:
    model = block()
    model.graph.node[0].output[0] = "edge_inspect_split_0_0_conv"
    for node in model.graph.node[1:]:
        node.input[:] = ["edge_inspect_split_0_0_conv" if i == "c" else i for i in node.input]
    with pytest.raises(ModelError, match="edge_inspect_split_"):
        with_split_convs(model, where="m.onnx")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_models_fold_every_c3k2_split(path: Path, run_onnx: RunOnnx) -> None:
    """Nine C3k2 blocks in yolo11n; the attention block's Split (axis 2) stays."""
    original = onnx.load(str(path))
    folded, count = with_split_convs(original, where=str(path))
    assert count == 9
    onnx.checker.check_model(folded)
    assert ops(folded).count("Split") == ops(original).count("Split") - 9 == 1
    dims = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).random(dims, dtype=np.float32)
    (got,), (want,) = run_onnx(folded, x), run_onnx(original, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)  # boxes in pixels up to ~320, scores in [0, 1]
