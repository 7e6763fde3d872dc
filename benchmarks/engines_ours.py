"""Our rows of the engines benchmark: the service's own path, `Inspector.judge` (preprocess into
the engine's input, inference, decode + NMS, the decision rules) on an engine built from the
`engine:` section a user would write (validated by the service's engine registry).

A row whose setting is process-wide (oneDNN's instruction-set cap, `max_cpu_isa`) runs in a
worker process of `benchmarks/engines.py` (`Worker`), driven round by round like the others.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from engines_common import REPO, WORK, Bench, Row, convert, load_frames, run_block, warm_up

from cameras.base import Frame
from edge.decision import DecisionConfig, compile_rules
from edge.engines.base import EngineConfigBase
from edge.engines.factory import build_engine
from edge.engines.host import cpu_flags
from edge.engines.model import model_id_of
from edge.inspector import DecodeSettings, Inspector
from edge.registry import engine_registry

log = logging.getLogger("bench.engines")

NO_AMX = "avx512_core_bf16"  # every instruction set of an AMX CPU but AMX (oneDNN's cap)
_MSG = "@@bench "  # prefix of the worker's protocol lines on its stdout
MAX_DETECTIONS = 300


def our_config(
    runtime: str,
    model: Path,
    threads: int,
    precision: str | None = None,
    *,
    fuse: bool = True,
    max_cpu_isa: str | None = None,
) -> EngineConfigBase:
    """The `engine:` section of this row, validated as the service validates it."""
    section: dict[str, Any] = {"type": runtime, "model": str(model), "warmup": 3}
    if runtime in ("onnxruntime", "openvino"):
        section["fuse_preprocess"] = fuse
    if runtime == "onnxruntime":
        section.update(providers=["CPUExecutionProvider"], intra_op_threads=threads)
    elif runtime == "openvino":
        section.update(device="CPU", num_threads=threads, precision_hint=precision, max_cpu_isa=max_cpu_isa)
    config: EngineConfigBase = engine_registry().validate(section)  # type: ignore[assignment]
    return config


def ours(name: str, cfg: EngineConfigBase, conf: float, iou: float) -> Bench:
    """Our full path on `cfg`'s engine: one `Inspector.judge` per frame, timed by its own stage
    stamps (full: preprocessing to decision; inference: the engine call alone)."""
    engine = build_engine(cfg, REPO)
    info = engine.load()  # loaded already: returns its ModelInfo
    rules = compile_rules(DecisionConfig(min_confidence=conf), info.names)
    inspector = Inspector(engine, info, rules, DecodeSettings(conf, iou, MAX_DETECTIONS))

    def step(array: np.ndarray) -> Row:
        r = inspector.judge(Frame(array, 0, "", "bench", 0))
        return (
            (r.finished_ns - r.started_ns) / 1e6,
            (r.inferred_ns - r.preprocessed_ns) / 1e6,
            len(r.decision.detections),
        )

    notes: dict[str, Any] = {"model_id": info.model_id, "engine_version": getattr(engine, "version", None)}
    if getattr(engine, "kernels", None):
        notes["kernels"] = dict(engine.kernels)  # type: ignore[attr-defined]
    cap = getattr(cfg, "max_cpu_isa", None)
    if cap:
        notes["max_cpu_isa"] = cap
    return Bench(name, "ours", engine.runtime, str(cfg.model), step, engine.close, notes, inspector=inspector)


def isolated_pre_post(b: Bench, frames: list[np.ndarray], passes: int = 5) -> dict[str, Any]:
    """Our preprocess and decode alone (no inference in between), for BGR and mono 640x640 frames."""
    inspector = b.inspector
    assert inspector is not None
    pre, engine, dec = inspector.preprocess, inspector.engine, inspector.decode
    out: dict[str, Any] = {"engine": b.name}
    clock = time.perf_counter_ns
    for color in ("bgr", "mono"):
        imgs = [f if (f.ndim == 3) == (color == "bgr") else convert(f, color) for f in frames]
        raws, geoms = [], []
        for f in imgs:
            geoms.append(pre(f))
            raws.append(engine.infer().copy())
        t_pre, t_post = [], []
        for _ in range(passes):
            for f, raw, g in zip(imgs, raws, geoms, strict=True):
                t0 = clock()
                pre(f)
                t1 = clock()
                dec(raw, g)
                t2 = clock()
                t_pre.append((t1 - t0) / 1e3)
                t_post.append((t2 - t1) / 1e3)
        out[color] = {
            "shape": list(imgs[0].shape),
            "preprocess_us_p50": round(float(np.percentile(t_pre, 50)), 1),
            "decode_us_p50": round(float(np.percentile(t_post, 50)), 1),
            "sum_us_p50": round(float(np.percentile(np.add(t_pre, t_post), 50)), 1),
        }
    return out


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX INT8 (the kernels `max_cpu_isa` can keep an INT8 model off)."""
    return "amx_int8" in cpu_flags()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AMX or AVX-512 BF16), so the bf16 row means something."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_flags()))


def int8_model(args: argparse.Namespace, model: Path, skipped: dict[str, str]) -> Path | None:
    """The INT8 IR: --int8, or WORK/<stem>-int8.xml made for this model (quantized now if needed)."""
    if args.int8 is not None:
        if not args.int8.is_file():
            skipped["openvino-int8"] = f"--int8 {args.int8} does not exist"
            return None
        return Path(args.int8)
    out = WORK / f"{model.stem}-int8.xml"
    source_id = model_id_of(model)
    if out.is_file():
        try:
            import openvino as ov

            rt = ov.Core().read_model(str(out))
            if rt.get_rt_info(["model_info", "source_model_id"]).astype(str) == source_id:
                log.info("reusing %s (quantized from %s)", out, source_id)
                return out
        except Exception as e:  # unreadable or older file: make it again
            log.info("not reusing %s: %s", out, e)
    from edge.errors import EdgeInspectError
    from edge.quantization.quantize import quantize_onnx

    calib = args.calib
    if calib is None:
        train = REPO / "build" / "datasets" / "deeppcb" / "images" / "train"
        calib = train if train.is_dir() else REPO / "edge" / "demo_data" / "images"
    try:
        result = quantize_onnx(model, calib, out=out, calib_count=args.calib_count)
    except EdgeInspectError as e:
        skipped["openvino-int8"] = f"could not produce the INT8 IR: {e}"
        return None
    log.info("quantized %s -> %s in %.1f s", model, out, result.seconds)
    return out


# ----------------------------------------------------------------- ours, in a worker process


class Worker:
    """One of our engines in a child process of the benchmark (`--worker`), driven round by round.

    For a setting that is process-wide: oneDNN reads its instruction-set cap (`max_cpu_isa`) once
    per process, so a capped OpenVINO engine cannot share the process with uncapped ones. The child
    loads the same frames (same arguments), runs exactly `ours()`'s path on them and times itself;
    the parent interleaves its rounds with the other engines' like any other row.
    """

    def __init__(self, script: Path, spec: dict[str, Any], argv: list[str]) -> None:
        cmd = [sys.executable, str(script), *argv, "--worker", json.dumps(spec)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_MSG):
                msg: dict[str, Any] = json.loads(line[len(_MSG) :])
                if "error" in msg:
                    raise RuntimeError(f"worker: {msg['error']}")
                return msg
        raise RuntimeError(f"worker exited with status {self.proc.wait()}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def round(self) -> list[Row]:
        return [(float(a), float(b), int(c)) for a, b, c in self.ask("round")["rows"]]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except RuntimeError:
                pass
            self.proc.wait(timeout=60)


def in_worker(name: str, script: Path, spec: dict[str, Any], argv: list[str]) -> Bench:
    worker = Worker(script, {**spec, "name": name}, argv)

    def step(frame: np.ndarray) -> Row:
        raise RuntimeError(f"{name} runs in a worker process: use its rounds")

    notes = {**worker.hello.get("notes", {}), "process": "own (worker): a process-wide setting"}
    return Bench(name, "ours", spec["runtime"], spec["model"], step, worker.close, notes, worker=worker)


def worker_main(args: argparse.Namespace, spec: dict[str, Any]) -> int:
    """`--worker SPEC`: one of our engines, timed on the rounds the parent asks for (stdin/stdout)."""

    def say(msg: dict[str, Any]) -> None:
        sys.stdout.write(_MSG + json.dumps(msg) + "\n")
        sys.stdout.flush()

    try:
        frames, _ = load_frames(args)
        model, cap = Path(spec["model"]), spec.get("max_cpu_isa")
        cfg = our_config(spec["runtime"], model, args.threads, spec.get("precision"), max_cpu_isa=cap)
        first = ours(spec["name"], cfg, args.conf, args.iou)  # the first compile here: the cap applies
    except Exception as e:
        say({"error": f"{type(e).__name__}: {e}"})
        return 1

    if args.reload:
        first.close()
    else:
        warm_up(first, frames, args.warmup)
    say({"ready": True, "notes": first.notes})
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        try:
            if command == "round":
                gc.collect()
                gc.disable()  # as in the parent: a collection inside the block would be charged to it
                try:
                    make = lambda: ours(spec["name"], cfg, args.conf, args.iou)  # noqa: E731
                    rows = run_block(make, None if args.reload else first, frames, args.warmup)
                finally:
                    gc.enable()
                say({"rows": rows})
            elif command == "accuracy":
                from edge.quantization.int8_accuracy import compare_accuracy

                a = json.loads(rest)
                acc = compare_accuracy(Path(a["fp32"]), model, Path(a["data"]), a["split"], threads=args.threads)
                say({"accuracy": acc})
            elif command == "quit":
                say({"bye": True})
                break
            else:
                say({"error": f"unknown command {command!r}"})
        except Exception as e:
            say({"error": f"{type(e).__name__}: {e}"})
    if not args.reload:
        first.close()
    return 0
