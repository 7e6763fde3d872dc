"""The `auto` engine: pick the fastest runtime on this host for this model, once.

TensorRT wins outright where it is installed and an NVIDIA GPU is present. Otherwise every
installed CPU runtime among `candidates` is loaded on the model and timed on `probe_iterations`
inferences, interleaved in blocks (`probe_engines`); the lowest median wins. The choice is
cached in a JSON file keyed by (model sha256, runtime versions, hashed CPU flags, core count,
batch), so the next start with the same key loads the winner without probing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.engines.base import Engine, EngineConfigBase
from edge.engines.host import cpu_flags_hash, cuda_gpu_present, current_cap, runtime_installed, runtime_version
from edge.engines.letterbox import padding_value
from edge.engines.model import file_sha256, resolve_model_path
from edge.errors import EngineError, EngineUnavailableError, ModelError

log = logging.getLogger(__name__)

RuntimeName = Literal["tensorrt", "openvino", "onnxruntime"]
# Raised whenever a change makes choices already cached unfit to reuse (another default, a graph
# rewrite, another probe): a cache of another version is ignored and the runtimes are timed again.
CACHE_VERSION = 5
DEFAULT_CANDIDATES: tuple[RuntimeName, ...] = ("tensorrt", "openvino", "onnxruntime")


class AutoEngineConfig(EngineConfigBase):
    """Choose TensorRT where possible, else the fastest CPU runtime measured on this host."""

    type: Literal["auto"] = "auto"
    candidates: list[RuntimeName] = Field(
        default_factory=lambda: list(DEFAULT_CANDIDATES),
        min_length=1,
        description="Runtimes to consider, in order of preference on a tie.",
    )
    probe_iterations: int = Field(20, ge=1, description="Timed inferences per runtime when probing.")
    cache_file: str = Field("~/.cache/edge-inspect/engine-choice.json", description="Where the choice is remembered.")

    def build(self, base_dir: Path) -> Engine:
        """The chosen engine, already loaded (probing needs loaded engines)."""
        return choose_engine(self, Path(base_dir))

    def runtime_config(self, runtime: str) -> EngineConfigBase:
        """The plain config of one runtime with this config's common fields."""
        common = self.model_dump(include=set(EngineConfigBase.model_fields))
        if runtime == "onnxruntime":
            from edge.engines.onnxruntime import OnnxRuntimeEngineConfig

            return OnnxRuntimeEngineConfig(**common)
        if runtime == "openvino":
            from edge.engines.openvino import OpenVinoEngineConfig

            return OpenVinoEngineConfig(**common)
        if runtime == "tensorrt":
            from edge.engines.tensorrt import TensorRtEngineConfig

            return TensorRtEngineConfig(**common)
        raise EngineError(f"auto: unknown runtime {runtime!r}")


def choice_key(model_path: Path, runtimes: Sequence[str], batch: int) -> dict[str, Any]:
    return {
        "model_sha256": file_sha256(model_path),
        "runtimes": {r: runtime_version(r) for r in sorted(runtimes)},
        "cpu_flags": cpu_flags_hash(),
        "cores": os.cpu_count() or 0,
        "batch": batch,
        "onednn_max_cpu_isa": current_cap(),  # it changes OpenVINO's kernels, so its speed
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------------------------
# The cache file
# --------------------------------------------------------------------------------------------


def read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("auto engine: ignoring unreadable choice cache %s: %s", path, e)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    choices = data.get("choices")
    return choices if isinstance(choices, dict) else {}


def write_cache(path: Path, choices: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(
            json.dumps({"version": CACHE_VERSION, "choices": choices}, indent=2, sort_keys=True),
            encoding="utf-8",
        )
        os.replace(tmp, path)
    except OSError as e:
        log.warning("auto engine: cannot write choice cache %s: %s", path, e)


# --------------------------------------------------------------------------------------------
# Probing and choosing
# --------------------------------------------------------------------------------------------


PROBE_BLOCK = 5  # timed inferences an engine runs in a row before the next one takes over


def probe_engines(engines: dict[str, Engine], iterations: int, block: int = PROBE_BLOCK) -> dict[str, float]:
    """Median ms of `iterations` full inferences per loaded engine, interleaved in blocks.

    All engines get the same mid-grey input. Each round every engine runs one untimed settling
    inference and then up to `block` timed ones; the starting engine rotates each round. Timing
    one engine right after another measures the neighbour too: ONNX Runtime's pool threads keep
    spinning for a while after a run, and on a 2-core host they take a core from the next
    engine's inference (OpenVINO 16-17 ms timed straight after ONNX Runtime, 10-14 ms alone), so
    the settling run absorbs what the previous engine left running and the block is timed alone.
    """
    for engine in engines.values():
        buffer = engine.input_buffer()
        buffer.fill(padding_value(buffer.dtype))
    names = list(engines)
    times: dict[str, list[float]] = {n: [] for n in names}
    block = max(1, block)
    rounds = -(-iterations // block)
    for i in range(rounds):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            engine = engines[name]
            engine.infer()  # settle: whatever the previous engine left running or cached
            for _ in range(min(block, iterations - len(times[name]))):
                t0 = time.perf_counter()
                engine.infer()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(ts) for n, ts in times.items()}


def _load(config: AutoEngineConfig, runtime: str, base_dir: Path) -> Engine:
    engine: Engine = config.runtime_config(runtime).build(base_dir)  # type: ignore[attr-defined]
    engine.load()
    return engine


def choose_engine(config: AutoEngineConfig, base_dir: Path) -> Engine:
    model_path = resolve_model_path(config.model, base_dir)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found (or not a file)")

    if "tensorrt" in config.candidates and runtime_installed("tensorrt") and cuda_gpu_present():
        try:
            engine = _load(config, "tensorrt", base_dir)
            log.info("auto engine: TensorRT with a CUDA GPU is available; using it")
            return engine
        except EngineError as e:
            log.warning("auto engine: TensorRT is installed but failed (%s); trying CPU runtimes", e)

    cpu: list[str] = [r for r in config.candidates if r != "tensorrt" and runtime_installed(r)]
    if not cpu:
        raise EngineUnavailableError(
            f"auto engine: none of {config.candidates} is usable here (install openvino or onnxruntime)"
        )
    cache_path = Path(config.cache_file).expanduser()
    key = choice_key(model_path, cpu, config.batch)
    digest = key_digest(key)
    choices = read_cache(cache_path)
    cached = choices.get(digest)
    if isinstance(cached, dict) and cached.get("runtime") in cpu:
        runtime = str(cached["runtime"])
        try:
            engine = _load(config, runtime, base_dir)
            log.info(
                "auto engine: using cached choice %s for %s (measured %s ms, cache %s)",
                runtime,
                model_path.name,
                cached.get("median_ms"),
                cache_path,
            )
            return engine
        except EngineError as e:
            log.warning("auto engine: cached choice %s failed (%s); probing again", runtime, e)

    engines: dict[str, Engine] = {}
    try:
        for runtime in cpu:
            try:
                engines[runtime] = _load(config, runtime, base_dir)
            except EngineError as e:
                log.warning("auto engine: %s cannot run %s: %s", runtime, model_path.name, e)
        if not engines:
            raise EngineUnavailableError(f"auto engine: no runtime among {cpu} could load {model_path}")
        medians = probe_engines(engines, config.probe_iterations)
        best = min(medians, key=lambda r: (medians[r], cpu.index(r)))
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    log.info(
        "auto engine: probed %s over %d inferences each, median ms %s; chose %s",
        model_path.name,
        config.probe_iterations,
        {r: round(ms, 3) for r, ms in medians.items()},
        best,
    )
    for runtime, engine in engines.items():
        if runtime != best:
            engine.close()
    choices[digest] = {
        "runtime": best,
        "median_ms": {r: round(ms, 4) for r, ms in medians.items()},
        "iterations": config.probe_iterations,
        "key": key,
        "model": str(model_path),
        "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_cache(cache_path, choices)
    return engines[best]
