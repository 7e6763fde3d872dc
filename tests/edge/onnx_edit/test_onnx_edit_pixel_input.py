"""The uint8 pixel input put in front of an ONNX model (edge.onnx_edit.pixel_input)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.errors import ModelError
from edge.onnx_edit.pixel_input import PIXEL_INPUT, with_pixel_input

ort = pytest.importorskip("onnxruntime")

TinyModel = Callable[..., Path]
ToTensor = Callable[[np.ndarray], np.ndarray]


RunOnnx = Callable[[onnx.ModelProto, np.ndarray], list[np.ndarray]]


@pytest.mark.parametrize("cast_first", [False, True], ids=["bytes-moved", "cast-first"])
@pytest.mark.parametrize(("channels", "batch"), [(3, 1), (1, 1), (3, "N")])
def test_pixel_input_is_bit_identical_to_the_float_path(
    tiny_model: TinyModel,
    pixels_to_tensor: ToTensor,
    run_onnx: RunOnnx,
    channels: int,
    batch: int | str,
    cast_first: bool,
) -> None:
    original = onnx.load(str(tiny_model(channels=channels, batch=batch, imgsz=(24, 40))))
    fused = with_pixel_input(original, cast_first=cast_first)
    onnx.checker.check_model(fused, full_check=True)
    (inp,) = fused.graph.input
    assert inp.name == PIXEL_INPUT and inp.type.tensor_type.elem_type == TensorProto.UINT8
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims == [batch, 24, 40, channels]
    assert original.graph.input[0].name == "images" and len(original.graph.node) == 2  # not modified
    n = 2 if batch == "N" else 1
    pixels = np.random.default_rng(4).integers(0, 256, (n, 24, 40, channels), dtype=np.uint8)
    np.testing.assert_array_equal(run_onnx(fused, pixels)[0], run_onnx(original, pixels_to_tensor(pixels))[0])


def test_node_order_moves_bytes_unless_cast_first(tiny_model: TinyModel) -> None:
    """TensorRT only casts a uint8 input: with cast_first the pixels' one consumer is the Cast."""
    model = onnx.load(str(tiny_model()))
    assert [n.op_type for n in with_pixel_input(model).graph.node][:4] == ["Transpose", "Gather", "Cast", "Div"]
    trt_order = with_pixel_input(model, cast_first=True).graph.node
    assert [n.op_type for n in trt_order][:4] == ["Cast", "Transpose", "Gather", "Div"]
    assert [n.op_type for n in trt_order if PIXEL_INPUT in n.input] == ["Cast"]


def test_float16_model_gets_a_float16_division(run_onnx: RunOnnx) -> None:
    half = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["images"], ["out"])],
            "half",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT16, [1, 3, 32, 32])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT16, [1, 3, 32, 32])],
        )
    )
    fused16 = with_pixel_input(half)
    cast = next(n for n in fused16.graph.node if n.op_type == "Cast")
    assert cast.attribute[0].i == TensorProto.FLOAT16
    pixels = np.full((1, 32, 32, 3), 51, np.uint8)
    (out,) = run_onnx(fused16, pixels)
    assert out.dtype == np.float16 and np.allclose(out, 0.2, atol=1e-3)


def single_input_model(inputs: list[onnx.ValueInfoProto], node: onnx.NodeProto) -> onnx.ModelProto:
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph([node], "g", inputs, [out]))


def test_refuses_models_it_cannot_front() -> None:
    f32 = TensorProto.FLOAT
    two = single_input_model(
        [
            helper.make_tensor_value_info("a", f32, [1, 3, 8, 8]),
            helper.make_tensor_value_info("b", f32, [1, 3, 8, 8]),
        ],
        helper.make_node("Add", ["a", "b"], ["out"]),
    )
    with pytest.raises(ModelError, match="exactly one input, found 2"):
        with_pixel_input(two, where="two.onnx")
    ints = single_input_model(
        [helper.make_tensor_value_info("a", TensorProto.INT32, [1, 3, 8, 8])],
        helper.make_node("Identity", ["a"], ["out"]),
    )
    with pytest.raises(ModelError, match="not float32 or float16"):
        with_pixel_input(ints)
    flat = single_input_model(
        [helper.make_tensor_value_info("a", f32, [1, 192])], helper.make_node("Identity", ["a"], ["out"])
    )
    with pytest.raises(ModelError, match="4-D"):
        with_pixel_input(flat)
    four = single_input_model(
        [helper.make_tensor_value_info("a", f32, [1, 4, 8, 8])], helper.make_node("Identity", ["a"], ["out"])
    )
    with pytest.raises(ModelError, match="channel count of 1 or 3"):
        with_pixel_input(four)
    taken = single_input_model(
        [helper.make_tensor_value_info("a", f32, [1, 3, 8, 8])], helper.make_node("Identity", ["a"], [PIXEL_INPUT])
    )
    with pytest.raises(ModelError, match="already uses the name"):
        with_pixel_input(taken)


def test_initializers_listed_as_inputs_are_kept(
    tiny_model: TinyModel, pixels_to_tensor: ToTensor, run_onnx: RunOnnx
) -> None:
    """Old exporters (IR < 4) list every weight as a graph input too: only the image is replaced."""
    original = onnx.load(str(tiny_model()))
    for init in original.graph.initializer:
        original.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    fused = with_pixel_input(original)
    names = [i.name for i in fused.graph.input]
    assert names[0] == PIXEL_INPUT and "images" not in names and {"w", "b", "shape"} <= set(names)
    pixels = np.random.default_rng(5).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    sess = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {PIXEL_INPUT: pixels})[0]
    # (weights listed as inputs are not constant-folded: another conv kernel, so ulp-close only)
    (want,) = run_onnx(onnx.load(str(tiny_model())), pixels_to_tensor(pixels))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
