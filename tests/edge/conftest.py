"""Fixtures for the engine tests: tiny ONNX detection models built with `onnx.helper`."""

from __future__ import annotations

import glob
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.engines.base import Engine

TinyModel = Callable[..., Path]

REPO = Path(__file__).resolve().parents[2]
DEEPPCB_IMAGES = (REPO.parent / "shared" / "datasets" / "deeppcb" / "images").resolve()


def ultralytics_metadata(names: Sequence[str], imgsz: tuple[int, int], **extra: str) -> dict[str, str]:
    md = {
        "author": "Ultralytics",
        "stride": "32",
        "task": "detect",
        "batch": "1",
        "imgsz": str(list(imgsz)),
        "names": str(dict(enumerate(names))),
        "channels": "3",
        "end2end": "False",
    }
    md.update(extra)
    return md


def make_model(
    path: Path,
    *,
    num_classes: int = 3,
    imgsz: tuple[int, int] = (32, 32),
    channels: int = 3,
    batch: int | str = 1,
    metadata: dict[str, str] | None = None,
    output_shape: Sequence[int | str] | None = None,
    input_type: int | None = None,
    seed: int = 0,
) -> Path:
    """A runnable stand-in detector: 1x1 conv to 4+nc channels, reshaped to (B, 4+nc, H*W).

    With `output_shape` given instead, the graph is a header-only stub whose declared output
    shape is that (for model-info tests; not meant to run).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT if input_type is None else input_type
    h, w = imgsz
    rows = 4 + num_classes
    inp = helper.make_tensor_value_info("images", elem, [batch, channels, h, w])
    if output_shape is not None:
        out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output_shape))
        nodes = [helper.make_node("Identity", ["images"], ["output0"])]
        inits = []
    else:
        rng = np.random.default_rng(seed)
        weight = rng.normal(0, 0.5, (rows, channels, 1, 1)).astype(np.float32)
        bias = rng.normal(0, 0.1, (rows,)).astype(np.float32)
        shape = np.array([-1 if isinstance(batch, str) else batch, rows, h * w], np.int64)
        inits = [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(shape, "shape"),
        ]
        nodes = [
            helper.make_node("Conv", ["images", "w", "b"], ["conv"]),
            helper.make_node("Reshape", ["conv", "shape"], ["output0"]),
        ]
        out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, rows, h * w])
    graph = helper.make_graph(nodes, "tiny", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if metadata is None:
        metadata = ultralytics_metadata([f"c{i}" for i in range(num_classes)], imgsz)
    for k, v in metadata.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> TinyModel:
    counter = iter(range(1_000_000))

    def factory(**kwargs: object) -> Path:
        return make_model(tmp_path / f"tiny{next(counter)}.onnx", **kwargs)  # type: ignore[arg-type]

    return factory


def assert_infer_allocates_nothing(engine: Engine, calls: int = 200) -> None:
    """`calls` more `infer()`s of a loaded, warmed-up engine grow traced memory by 512 bytes at most."""
    tracemalloc.start()
    try:
        engine.infer()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(calls):
            engine.infer()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown <= 512, f"infer() grew traced memory by {grown} bytes over {calls} calls"


@pytest.fixture(scope="session")
def infer_allocates_nothing() -> Callable[[Engine], None]:
    """`assert_infer_allocates_nothing(engine)`: the steady-state `infer()` allocation check."""
    return assert_infer_allocates_nothing


def pixels_as_tensor(pixels: np.ndarray) -> np.ndarray:
    """(B, H, W, C) uint8 BGR pixels -> the (B, C, H, W) float32 RGB / 255 tensor the model sees.

    What an engine with `fuse_preprocess` does inside its graph, written out plainly in numpy.
    """
    nchw = pixels.transpose(0, 3, 1, 2)
    if nchw.shape[1] == 3:
        nchw = nchw[:, ::-1]
    return np.ascontiguousarray(nchw.astype(np.float32) / np.float32(255))


def fill_random(buffer: np.ndarray, seed: int) -> None:
    """Random input of the buffer's kind: uint8 pixels 0..255, or a float tensor in [0, 1)."""
    rng = np.random.default_rng(seed)
    if buffer.dtype == np.uint8:
        buffer[...] = rng.integers(0, 256, buffer.shape, dtype=np.uint8)
    else:
        buffer[...] = rng.uniform(0, 1, buffer.shape).astype(buffer.dtype)


@pytest.fixture(scope="session")
def random_input() -> Callable[[np.ndarray, int], None]:
    """`fill_random(buffer, seed)`: random engine input, pixels or float tensor by the buffer's dtype."""
    return fill_random


@pytest.fixture(scope="session")
def pixels_to_tensor() -> Callable[[np.ndarray], np.ndarray]:
    """`pixels_as_tensor(pixels)`: a fused engine's uint8 input as the float tensor it becomes."""
    return pixels_as_tensor


def run_onnx_model(model: Any, feed: np.ndarray) -> list[np.ndarray]:
    """Every output of an in-memory ONNX model (`onnx.ModelProto`) on ORT's CPU provider, fed its one input.

    ORT logs from level info up, so a warning about the graph (an unused initializer an edit left
    behind) shows in the test output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, {sess.get_inputs()[0].name: feed})]


@pytest.fixture(scope="session")
def run_onnx() -> Callable[[Any, np.ndarray], list[np.ndarray]]:
    """`run_onnx_model(model, feed)`: every output of an in-memory ONNX model on ORT's CPU provider."""
    return run_onnx_model


@pytest.fixture(scope="session")
def ultra_metadata() -> Callable[..., dict[str, str]]:
    """`ultralytics_metadata(names, imgsz, **overrides)`: the props Ultralytics writes."""
    return ultralytics_metadata


@pytest.fixture(scope="session")
def pcb_test_images() -> list[Path]:
    """A few DeepPCB test images (640x640 grayscale) from ../shared, or skip."""
    files = sorted(glob.glob(str(DEEPPCB_IMAGES / "*" / "*" / "*_test.jpg")))
    if not files:
        pytest.skip(f"DeepPCB images not found under {DEEPPCB_IMAGES}")
    step = max(1, len(files) // 4)
    return [Path(f) for f in files[::step][:4]]


_BLOCKER = """
import sys

BLOCKED = {blocked!r}
ATTEMPTED = []  # every import of a blocked package tried, even one whose ImportError was caught


class _Blocked:
    '''Refuses the blocked top-level packages as if they were not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            ATTEMPTED.append(name)
            raise ImportError(f"{{name}} is blocked by the test (as if not installed)")
        return None


sys.meta_path.insert(0, _Blocked())
"""


def run_without_modules(code: str, blocked: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where importing any of the `blocked` top-level packages
    raises ImportError (whether or not they are installed here); then check that none of them was
    imported. `code` sees `ATTEMPTED`, the blocked imports tried so far (a guarded
    `try: import torch` counts). Raises AssertionError with the child's output when it fails."""
    check = "\nassert not [m for m in sys.modules if m.split('.')[0] in BLOCKED], 'a blocked module was imported'\n"
    script = _BLOCKER.format(blocked=tuple(blocked)) + code + check
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


_ENGINE_WITHOUT = """
from pathlib import Path
from edge.errors import EngineUnavailableError
from edge.registry import engine_registry
engine = engine_registry().validate({section!r}).build(Path("."))
assert not ATTEMPTED, f"importing and building the engine tried to import {{ATTEMPTED}}"
try:
    engine.load()
except EngineUnavailableError as e:
    assert {missing!r} in str(e), e
else:
    raise AssertionError("load() did not raise EngineUnavailableError")
"""


def check_engine_without(section: dict[str, Any], blocked: Sequence[str], missing: str) -> None:
    """In a fresh interpreter where the `blocked` packages cannot be imported: the engine of
    `section` (an `engine:` config section) imports, validates and builds without trying to import
    any of them, and its `load()` raises EngineUnavailableError saying `missing`."""
    run_without_modules(_ENGINE_WITHOUT.format(section=section, missing=missing), blocked, REPO)


@pytest.fixture(scope="session")
def engine_without_modules() -> Callable[[dict[str, Any], Sequence[str], str], None]:
    """`check(section, blocked, missing)`: see `check_engine_without`."""
    return check_engine_without
