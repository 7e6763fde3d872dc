"""Shared by the shipped-model tests: a model's ReLU variant beside it, and its activation counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def model_variant(model: Path, variant: str, relu_name: str) -> Path:
    """`model` itself for variant "silu", the ReLU model `relu_name` beside it for "relu"; fails if missing."""
    path = model if variant == "silu" else model.with_name(relu_name)
    if not path.is_file():
        pytest.fail(f"the shipped model {path} is missing")
    return path


def assert_activations(model: Path, relu: bool) -> None:
    """A ReLU variant has no SiLU left (the point of it: CPU INT8 speed); the others only SiLU (77 in yolo11n)."""
    ov = pytest.importorskip("openvino")
    from edge.quantization.quantize import activation_counts

    counts = activation_counts(ov.convert_model(str(model)))
    assert counts == ({"silu": 0, "relu": 77} if relu else {"silu": 77, "relu": 0})


@pytest.fixture(scope="session")
def variant_of() -> Callable[[Path, str, str], Path]:
    """`model_variant(model, variant, relu_name)`: the shipped model or its ReLU variant beside it."""
    return model_variant


@pytest.fixture(scope="session")
def check_activations() -> Callable[[Path, bool], None]:
    """`assert_activations(model, relu)`: the model's SiLU/ReLU counts are its variant's."""
    return assert_activations
