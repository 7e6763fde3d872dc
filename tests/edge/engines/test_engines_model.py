"""Reading ModelInfo from ONNX headers and Ultralytics metadata (edge.engines.model)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge.engines.model import (
    INPUT_KIND_KEY,
    mark_reference_input,
    parse_names,
    read_model_info,
    resolve_model_path,
)
from edge.errors import ModelError

TinyModel = Callable[..., Path]
Meta = Callable[..., dict[str, str]]

NAMES = ("open", "short", "mousebite", "spur", "spurious_copper", "pin_hole")


def test_real_model(model_path: Path) -> None:
    info = read_model_info(model_path)
    assert info.names == NAMES
    assert info.input_hw == (320, 320)
    assert info.channels == 3 and info.batch == 1 and info.stride == 32
    assert info.layout == "anchors" and info.task == "detect"
    assert info.input_dtype == np.float32
    assert info.model_id == hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    assert read_model_info(model_path, expected_classes=list(NAMES)).names == NAMES


def test_real_model_refuses_other_classes(model_path: Path) -> None:
    with pytest.raises(ModelError, match="differ from the configured classes") as e:
        read_model_info(model_path, expected_classes=["open", "short"])
    assert str(model_path) in str(e.value)


def test_anchors_model_with_metadata(tiny_model: TinyModel) -> None:
    path = tiny_model(num_classes=3, imgsz=(32, 48))
    info = read_model_info(path)
    assert info.names == ("c0", "c1", "c2") and info.num_classes == 3
    assert info.input_hw == (32, 48) and info.layout == "anchors"
    assert info.path == str(path)


def test_reference_input_is_marked_in_the_metadata(tiny_model: TinyModel, ultra_metadata: Meta) -> None:
    path = tiny_model(num_classes=3)
    assert read_model_info(path).reference_input is False
    before = read_model_info(path).names
    mark_reference_input(path)
    mark_reference_input(path)  # idempotent: one entry
    info = read_model_info(path)
    assert info.reference_input is True and info.names == before
    import onnx

    assert [p.key for p in onnx.load(str(path)).metadata_props].count(INPUT_KIND_KEY) == 1
    odd = tiny_model(num_classes=3, metadata={**ultra_metadata(["a", "b", "c"], (32, 32)), INPUT_KIND_KEY: "stereo"})
    with pytest.raises(ModelError, match="'stereo'; known: 'reference-composite'"):
        read_model_info(odd)
    mono = tiny_model(num_classes=3, channels=1, metadata=ultra_metadata(["a", "b", "c"], (32, 32), channels="1"))
    mark_reference_input(mono)
    with pytest.raises(ModelError, match="needs 3 input channels, has 1"):
        read_model_info(mono)


def test_end2end_model(tiny_model: TinyModel, ultra_metadata: Meta) -> None:
    md = ultra_metadata(["a", "b"], (64, 64), end2end="True")
    info = read_model_info(tiny_model(imgsz=(64, 64), metadata=md, output_shape=[1, 300, 6]))
    assert info.layout == "end2end" and info.names == ("a", "b")


def test_model_without_metadata_infers_from_shapes(tiny_model: TinyModel) -> None:
    info = read_model_info(tiny_model(num_classes=4, metadata={}))
    assert info.names == ("class0", "class1", "class2", "class3")
    assert info.layout == "anchors" and info.input_hw == (32, 32) and info.stride == 32
    named = read_model_info(tiny_model(num_classes=2, metadata={}), expected_classes=["x", "y"])
    assert named.names == ("x", "y")


def test_end2end_without_metadata_needs_classes(tiny_model: TinyModel) -> None:
    path = tiny_model(metadata={}, output_shape=[1, 300, 6])
    with pytest.raises(ModelError, match="set the engine's `classes`"):
        read_model_info(path)
    assert read_model_info(path, expected_classes=["a", "b"]).names == ("a", "b")


def test_dynamic_batch_and_size_use_metadata(tiny_model: TinyModel, ultra_metadata: Meta) -> None:
    md = ultra_metadata(["a"], (64, 96), batch="4")
    path = tiny_model(num_classes=1, batch="N", metadata=md, output_shape=["N", 5, "anchors"])
    info = read_model_info(path)
    assert info.batch == 4 and info.input_hw == (32, 32)  # static H/W from the input wins


def test_float16_input(tiny_model: TinyModel) -> None:
    from onnx import TensorProto

    info = read_model_info(tiny_model(input_type=TensorProto.FLOAT16, output_shape=[1, 7, 16]))
    assert info.input_dtype == np.float16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_shape": [1, 7]}, "unsupported output layout"),
        ({"output_shape": [1, 4, 100], "metadata": {}}, "unsupported output layout"),
        ({"output_shape": [1, 9, 100]}, "metadata names 3 classes but the output"),
        ({"meta": {"task": "segment"}}, "task is 'segment'"),
        ({"meta": {"end2end": "True"}}, "metadata says end2end"),
        ({"meta": {"names": "{0: 'a', 2: 'b', 3: 'c'}"}}, "numbered 0..n-1"),
        ({"meta": {"names": "not python"}}, "not a dict or list"),
        ({"meta": {"imgsz": "[1, 2, 3]"}, "batch": "N", "output_shape": [1, 7, 16]}, "imgsz"),
        ({"channels": 2, "output_shape": [1, 7, 16]}, "channels"),
        ({"input_type": 6, "output_shape": [1, 7, 16]}, "input must be float32 or float16"),  # int32
    ],
)
def test_bad_models_name_the_file(
    tiny_model: TinyModel, ultra_metadata: Meta, kwargs: dict[str, object], message: str
) -> None:
    kwargs = dict(kwargs)
    if "meta" in kwargs:
        overrides = kwargs.pop("meta")
        assert isinstance(overrides, dict)
        kwargs["metadata"] = {**ultra_metadata(["a", "b", "c"], (32, 32)), **overrides}
    path = tiny_model(**kwargs)
    with pytest.raises(ModelError, match=message) as e:
        read_model_info(path)
    assert str(path) in str(e.value)


def test_not_a_file_and_not_onnx(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found") as e:
        read_model_info(tmp_path / "missing.onnx")
    assert "missing.onnx" in str(e.value)
    with pytest.raises(ModelError, match="not found"):
        read_model_info(tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffthis is not a protobuf" * 10)
    with pytest.raises(ModelError, match="ONNX") as e:
        read_model_info(junk)
    assert "junk.onnx" in str(e.value)


def test_parse_names_forms() -> None:
    assert parse_names("{1: 'b', 0: 'a'}") == ("a", "b")
    assert parse_names("['a', 'b']") == ("a", "b")
    with pytest.raises(ModelError):
        parse_names("42")


def test_resolve_model_path(tmp_path: Path) -> None:
    assert resolve_model_path("m.onnx", tmp_path) == tmp_path / "m.onnx"
    assert resolve_model_path("/abs/m.onnx", tmp_path) == Path("/abs/m.onnx")
