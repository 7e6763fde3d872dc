"""The auto engine: probe once, cache the choice, reuse it (edge.engines.auto)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from edge.engines import auto
from edge.engines.auto import AutoEngineConfig
from edge.engines.base import Engine
from edge.engines.factory import build_engine
from edge.errors import EngineUnavailableError, ModelError

TinyModel = Callable[..., Path]


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, float]]:
    """Records every probe (and its result); TensorRT is never picked on this host."""
    calls: list[dict[str, float]] = []
    real = auto.probe_engines

    def recording(engines: dict[str, Engine], iterations: int) -> dict[str, float]:
        result = real(engines, iterations)
        calls.append(result)
        return result

    monkeypatch.setattr(auto, "probe_engines", recording)
    monkeypatch.setattr(auto, "cuda_gpu_present", lambda: False)
    return calls


def config(model: Path, cache: Path, **kw: Any) -> AutoEngineConfig:
    return AutoEngineConfig(model=str(model), cache_file=str(cache), probe_iterations=3, warmup=1, **kw)


def test_probe_then_cache_then_reprobe_on_new_key(
    tiny_model: TinyModel, tmp_path: Path, probes: list[dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, cache = tiny_model(), tmp_path / "cache" / "choice.json"

    first = build_engine(config(model, cache), tmp_path)
    assert len(probes) == 1 and set(probes[0]) == {"openvino", "onnxruntime"}
    assert first.runtime == min(probes[0], key=lambda r: probes[0][r])
    assert first.input_buffer().shape == (1, 32, 32, 3) and first.infer().shape == (1, 7, 1024)  # uint8 pixels
    data = json.loads(cache.read_text())
    (entry,) = data["choices"].values()
    assert entry["runtime"] == first.runtime and set(entry["median_ms"]) == {"openvino", "onnxruntime"}
    assert entry["key"]["model_sha256"] and entry["key"]["cores"] >= 1 and entry["key"]["cpu_flags"]
    first.close()

    second = build_engine(config(model, cache), tmp_path)
    assert len(probes) == 1, "the cached choice should be reused without probing"
    assert second.runtime == first.runtime
    second.close()

    monkeypatch.setattr(auto, "cpu_flags_hash", lambda: "another-cpu")
    third = build_engine(config(model, cache), tmp_path)
    assert len(probes) == 2, "a different key must probe again"
    assert len(json.loads(cache.read_text())["choices"]) == 2
    third.close()

    other_model = tiny_model(seed=5)  # another file: another sha
    build_engine(config(other_model, cache), tmp_path).close()
    assert len(probes) == 3


def test_single_candidate_and_corrupt_cache(tiny_model: TinyModel, tmp_path: Path, probes: list[Any]) -> None:
    cache = tmp_path / "c.json"
    cache.write_text("{not json")
    engine = build_engine(config(tiny_model(), cache, candidates=["onnxruntime"]), tmp_path)
    assert engine.runtime == "onnxruntime" and len(probes) == 1
    assert json.loads(cache.read_text())["version"] == auto.CACHE_VERSION
    engine.close()


def test_no_usable_runtime(
    tiny_model: TinyModel, tmp_path: Path, probes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auto, "runtime_installed", lambda runtime: False)
    with pytest.raises(EngineUnavailableError, match="none of"):
        AutoEngineConfig(model=str(tiny_model()), cache_file=str(tmp_path / "c.json")).build(tmp_path)
    with pytest.raises(ModelError, match="missing.onnx"):
        AutoEngineConfig(model="missing.onnx", cache_file=str(tmp_path / "c.json")).build(tmp_path)


class _TensorRtStandIn:
    """What `_load` returns for TensorRT here (no GPU on this host): only its identity matters."""

    runtime = "tensorrt"

    def load(self) -> None:  # already loaded: build_engine's load() is a no-op
        pass

    def close(self) -> None:
        pass


@dataclass
class LoadLog:
    """The runtimes the auto engine tried to load, in order; whether TensorRT's load succeeds."""

    tried: list[str] = field(default_factory=list)
    trt_loads: bool = False


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> LoadLog:
    """Records every load the auto engine tries (TensorRT's succeeds where `trt_loads` is set)."""
    log = LoadLog()
    real = auto._load

    def recording(config: AutoEngineConfig, runtime: str, base_dir: Path) -> Engine:
        log.tried.append(runtime)
        if runtime == "tensorrt" and log.trt_loads:
            return _TensorRtStandIn()  # type: ignore[return-value]
        return real(config, runtime, base_dir)

    monkeypatch.setattr(auto, "_load", recording)
    monkeypatch.setattr(auto, "runtime_installed", lambda runtime: True)
    return log


@pytest.mark.parametrize("trt_loads", [True, False], ids=["tensorrt-loads", "tensorrt-fails"])
def test_tensorrt_preferred_with_a_gpu(
    tiny_model: TinyModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    probes: list[Any],
    loads: LoadLog,
    trt_loads: bool,
) -> None:
    """With TensorRT installed and a GPU present, TensorRT is tried first and taken without probing;
    if it fails to load, the CPU runtimes are probed as usual."""
    monkeypatch.setattr(auto, "cuda_gpu_present", lambda: True)
    loads.trt_loads = trt_loads
    engine = build_engine(config(tiny_model(), tmp_path / "c.json"), tmp_path)
    assert loads.tried[0] == "tensorrt"
    if trt_loads:
        assert isinstance(engine, _TensorRtStandIn) and loads.tried == ["tensorrt"] and probes == []
        assert not (tmp_path / "c.json").exists(), "a TensorRT choice is not a probed one: nothing cached"
    else:  # really fails here: TensorRT is not installed on this host
        assert engine.runtime in ("openvino", "onnxruntime") and len(probes) == 1
        assert sorted(loads.tried[1:]) == ["onnxruntime", "openvino"]
    engine.close()


def test_no_gpu_never_tries_tensorrt(tiny_model: TinyModel, tmp_path: Path, probes: list[Any], loads: LoadLog) -> None:
    engine = build_engine(config(tiny_model(), tmp_path / "c.json"), tmp_path)  # `probes`: no GPU
    assert "tensorrt" not in loads.tried and engine.runtime in ("openvino", "onnxruntime")
    engine.close()


def test_config_validation() -> None:
    cfg = AutoEngineConfig(model="m.onnx")
    assert cfg.candidates == ["tensorrt", "openvino", "onnxruntime"] and cfg.probe_iterations == 20
    assert cfg.runtime_config("openvino").model_dump()["model"] == "m.onnx"
    with pytest.raises(ValidationError):
        AutoEngineConfig(model="m.onnx", candidates=["pytorch"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        AutoEngineConfig(model="m.onnx", probe_iterations=0)
    with pytest.raises(ValidationError):
        AutoEngineConfig(model="m.onnx", candidates=[])


def test_choice_key_changes_with_the_onednn_cap(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cap on oneDNN's instruction set changes OpenVINO's kernels, so a choice probed without it is not reused."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    plain = auto.key_digest(auto.choice_key(model_path, ["onnxruntime", "openvino"], 1))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    capped = auto.choice_key(model_path, ["onnxruntime", "openvino"], 1)
    assert capped["onednn_max_cpu_isa"] == "AVX512_CORE_BF16"
    assert auto.key_digest(capped) != plain


class _Recorder:
    """An engine that only records when it ran (and takes a little time)."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.buffer = np.zeros((1, 4, 4, 3), np.uint8)

    def input_buffer(self) -> np.ndarray:
        return self.buffer

    def infer(self) -> np.ndarray:
        self.log.append(self.name)
        return self.buffer


def test_probe_times_engines_in_blocks_after_a_settling_run() -> None:
    """Each round: every engine runs once untimed, then a block of timed runs; the first engine rotates.
    (One at a time in turn, OpenVINO was timed while ONNX Runtime's pool threads still spun.)"""
    log: list[str] = []
    engines = {n: _Recorder(n, log) for n in ("a", "b")}
    medians = auto.probe_engines(engines, iterations=7, block=3)  # type: ignore[arg-type]
    assert set(medians) == {"a", "b"} and all(m >= 0 for m in medians.values())
    # rounds of (1 settle + 3 timed), the last round 1 + 1; a starts, then b, then a
    runs = ["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4 + ["a"] * 2 + ["b"] * 2
    assert log == runs
    assert all(e.buffer.min() == e.buffer.max() == 114 for e in engines.values())  # the same grey input
