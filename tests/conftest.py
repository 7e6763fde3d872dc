"""Shared fixtures: paths to the repo's model and data, and small pipeline helpers."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()
MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"  # frame-only
REFERENCE_MODEL = REPO / "models" / "pcb-ref-yolo11n-320.onnx"  # golden-reference composites
DEMO_DATA = REPO / "edge" / "demo_data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def model_path() -> Path:
    if not MODEL.is_file():
        pytest.fail(f"the shipped model {MODEL} is missing")
    return MODEL


@pytest.fixture(scope="session")
def reference_model_path() -> Path:
    if not REFERENCE_MODEL.is_file():
        pytest.fail(f"the shipped golden-reference model {REFERENCE_MODEL} is missing")
    return REFERENCE_MODEL


@pytest.fixture(scope="session")
def demo_references() -> Path:
    return DEMO_DATA / "references"


@pytest.fixture(scope="session")
def demo_images() -> Path:
    return DEMO_DATA / "images"


@pytest.fixture(scope="session")
def demo_labels() -> Path:
    return DEMO_DATA / "labels"


@pytest.fixture(scope="session")
def sim_cti() -> str:
    import genicam

    found = glob.glob(os.path.join(os.path.dirname(genicam.__file__), "*.cti"))
    if not found:
        pytest.fail("the genicam wheel ships no GenTL simulator (.cti)")
    return found[0]
