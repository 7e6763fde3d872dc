"""Property tests (hypothesis): hostile config files and corrupt images never crash the service.

- Config: any text, any YAML value, and a valid config with random leaves replaced, keys
  dropped or unknown ones added: `parse_config` returns a config or raises `ConfigError` whose
  every line names the file (and, where there is one, the path in it) -- nothing else.
- Images: encoded boards truncated, bit-flipped, emptied or prefixed with garbage, replayed in
  cached and pool modes: one frame per file per pass, in order; a file cut short is always an
  error frame naming it; the frame check never lets an error frame through.
- Through the real service: exactly one verdict per frame, every frame counted, and never a
  PASS for a frame that was cut short or could not be decoded.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cameras.replay import ReplayCameraConfig
from edge.config import parse_config
from edge.errors import ConfigError
from edge.frame_check import FrameCheck
from edge.verdict import VerdictKind
from tests.reliability.conftest import board_image, run_service, service_config

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID = {
    "version": "p1",
    "cameras": [{"type": "replay", "name": "cam", "path": "imgs", "rate_ppm": 60}],
    "engine": {"type": "onnxruntime", "model": "m.onnx", "confidence": 0.3},
    "decision": {"min_confidence": 0.25, "classes": {"short": {"max_count": 0}}},
    "pipeline": {"budget_ms": 200, "ring_slots": 8},
    "sinks": [{"type": "jsonl", "path": "out/v.jsonl"}, {"type": "log"}],
    "metrics": {"port": 0},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)


def _check(text: str) -> None:
    try:
        parse_config(text, "c.yaml", base_dir=Path("/nonexistent"), env={"X": "1"})
    except ConfigError as exc:
        assert exc.errors, "a ConfigError without its errors"
        for line in exc.errors:
            assert line.startswith("c.yaml"), line
        assert str(exc).startswith("c.yaml")


@FEW
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    _check(text)


@FEW
@given(values)
def test_any_yaml_value_is_a_config_or_a_config_error(value: Any) -> None:
    _check(yaml.safe_dump(value))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@FEW
@given(st.data())
def test_a_mutated_valid_config_is_a_config_or_a_config_error(data: st.DataObject) -> None:
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(raw)
        path = data.draw(st.sampled_from(paths))
        parent = raw
        for p in path[:-1]:
            parent = parent[p]
        action = data.draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(values)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(scalars)
        if not isinstance(raw, dict) or not raw:
            break
    _check(yaml.safe_dump(raw))


# -- corrupt images ---------------------------------------------------------------------------
corruption = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.95)),
    st.tuples(st.just("flip"), st.integers(0, 2**31)),
    st.tuples(st.just("empty"), st.just(0)),
    st.tuples(st.just("garbage"), st.integers(0, 2**31)),
    st.tuples(st.just("intact"), st.just(0)),
)


def _write_set(folder: Path, kinds: list[tuple[str, Any]], suffixes: list[str]) -> dict[str, str]:
    """One file per corruption; returns part -> kind."""
    folder.mkdir(parents=True, exist_ok=True)
    parts: dict[str, str] = {}
    for i, ((kind, arg), suffix) in enumerate(zip(kinds, suffixes, strict=True)):
        img = cv2.resize(board_image(i), (160, 160))
        ok, enc = cv2.imencode(suffix, img)
        assert ok
        data = enc.tobytes()
        if kind == "truncate":
            data = data[: int(len(data) * arg)]
        elif kind == "flip":
            rng = np.random.default_rng(arg)
            buf = bytearray(data)
            for pos in rng.integers(0, len(buf), 8):
                buf[pos] ^= 0xFF
            data = bytes(buf)
        elif kind == "empty":
            data = b""
        elif kind == "garbage":
            data = np.random.default_rng(arg).integers(0, 256, 64, dtype=np.uint8).tobytes() + data
        name = f"p{i:02d}"
        (folder / f"{name}{suffix}").write_bytes(data)
        parts[name] = kind
    return parts


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(corruption, min_size=1, max_size=6),
    st.data(),
    st.sampled_from(["cached", "pool"]),
)
def test_corrupt_files_through_the_replay_camera(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[tuple[str, Any]], data: st.DataObject, mode: str
) -> None:
    suffixes = data.draw(st.lists(st.sampled_from([".jpg", ".png"]), min_size=len(kinds), max_size=len(kinds)))
    folder = tmp_path_factory.mktemp("corrupt")
    parts = _write_set(folder, kinds, suffixes)
    cam = ReplayCameraConfig(path=str(folder), rate_ppm=0, mode=mode, labels="none", pool_size=2).build(folder)
    try:
        cam.open()
    except Exception as exc:  # only a set with no readable image may refuse to open, and clearly
        assert "none of the" in str(exc), exc
        assert all(k != "intact" for k in parts.values())
        return
    check = FrameCheck()
    frames = []
    try:
        gen = cam.frames()
        for f in gen:
            frames.append((f.part_id, f.error, f.array.shape, check.check(f)))
            cam.release(f)
            if len(frames) == 2 * len(parts):
                break
        gen.close()
    finally:
        cam.close()
    names = sorted(parts)
    assert [p.split("#")[0] for p, *_ in frames] == names * 2  # one frame per file per pass, in order
    for part, error, shape, why in frames:
        kind = parts[part.split("#")[0]]
        if kind in ("truncate", "empty"):
            assert error is not None and part.split("#")[0] in error, (kind, error)
        if kind == "intact":
            assert error is None and shape == (160, 160)
        if error is not None:
            assert why is not None and why.startswith("invalid_frame")  # never judged
        else:
            assert len(shape) in (2, 3)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=3, max_size=6), st.sampled_from(["cached", "pool"]))
def test_corrupt_files_through_the_service(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[tuple[str, Any]], mode: str
) -> None:
    kinds = [("intact", 0), *kinds]  # at least one readable image: the line runs
    tmp = tmp_path_factory.mktemp("svc")
    parts = _write_set(tmp / "line", kinds, [".jpg"] * len(kinds))
    cfg = service_config(tmp, {"path": str(tmp / "line"), "mode": mode, "labels": "none", "loop": False})
    summary, verdicts = run_service(cfg, max_frames=None, seconds=120)
    per = Counter((v.camera, v.frame_id) for v in verdicts)
    assert set(per.values()) == {1}
    assert summary["frames_in"] == len(parts) == len(verdicts) == sum(summary["verdicts"].values())
    for v in verdicts:
        if parts[v.part_id] in ("truncate", "empty"):
            assert v.verdict is VerdictKind.FAILSAFE, (v.part_id, parts[v.part_id], v.verdict)
        if v.verdict is VerdictKind.PASS or v.verdict is VerdictKind.REJECT:
            assert not v.failsafe_reason
    sink = next(s for s in summary["sinks"] if s["name"] == "jsonl")
    assert sink["written"] + sink["dropped"] + sink["backlog"] == len(parts)  # every drop counted
