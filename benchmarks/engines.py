"""Engine benchmark: our full path on each runtime against Ultralytics `predict` on the same model.

In ONE process, interleaved: every round runs each engine over the same frames, one engine after
the other (the order rotates from round to round), so drifting machine load hits all engines alike.

- ours, per runtime: `Preprocessor` (letterbox into the engine's input) -> `engine.infer()` ->
  `Decoder` (decode + NMS + scaling to source pixels): onnxruntime, openvino (f32: our default on
  CPU), openvino-bf16 (the opt-in `precision_hint: bf16`, on CPUs with native bf16 only; it is what
  OpenVINO, and so Ultralytics, runs by default there), openvino-int8 (an NNCF INT8 IR: `--int8`,
  or produced with `edge.quantization.quantize` when nncf is installed), openvino-int8-noamx (the same
  INT8 IR with `max_cpu_isa: avx512_core_bf16`, i.e. no AMX kernels, on CPUs with AMX; oneDNN
  reads that cap once per process, so this row runs in a worker process of this script, driven
  round by round like the others, and its INT8 accuracy is measured there too) and tensorrt where
  available.
  These take uint8 pixels and convert them inside the runtime's graph (`fuse_preprocess`, the
  default); `onnxruntime-float-input` and `openvino-float-input` are the same engines filling the
  float NCHW tensor in Python instead, so the run shows what fusing the conversion saves. Where
  it is fused, that conversion counts as inference, not as pre + post + glue: compare full paths.
- Ultralytics `YOLO(...).predict(frame)` on the same ONNX (Ultralytics runs it with ONNX Runtime),
  on the same model as an OpenVINO IR (FP32 and INT8; an Ultralytics-style `*_openvino_model/`
  folder made from our files) and on the PyTorch checkpoint (`--pt`, CPU).

`--color mono` feeds 2-D mono frames instead (a mono camera, like DeepPCB's): ours letterboxes them
directly, Ultralytics converts them to BGR first. Besides the interleaved full-path figures, our
preprocess and decode are also timed alone (no inference between them) for BGR and mono frames.

Every runtime gets the same thread count (`--threads`): ours through the engine configs,
Ultralytics' ONNX Runtime session and OpenVINO compiled model are rebuilt with it after loading
(Ultralytics exposes no such setting), PyTorch (the checkpoint, and the torch ops of Ultralytics'
pre/post-processing for every Ultralytics entry) through `torch.set_num_threads`, OpenCV through
`cv2.setNumThreads`. Frames are 640x640 uint8 (DeepPCB val), BGR by default, the same for every engine.

Per engine: p50/p99 ms of the full path, of inference alone, and of everything else (pre + post +
glue = full - inference; for Ultralytics, inference is what it reports in `Results.speed`). Ratios
of ours to Ultralytics on the same runtime and to Ultralytics' PyTorch CPU predict, over all
frames, and round by round (median, min, max) to show how much the machine's noise moves them. Targets
(issue #4): our onnxruntime full path <= 0.85x Ultralytics on onnxruntime and <= 0.5x Ultralytics
PyTorch; our pre+post+glue p50 <= 1 ms; INT8 full path <= 0.5x our FP32 openvino with part recall
on the validation split unchanged. Writes benchmarks/results/engines.json and engines.png.

    .venv-bench/bin/python benchmarks/engines.py [--rounds 5 --images 50 --threads 2 --pt PATH]

Engines whose runtime (ultralytics, torch, nncf, TensorRT) is missing are skipped with the reason
recorded in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.engines.base import EngineConfigBase  # noqa: E402
from edge.engines.letterbox import Preprocessor  # noqa: E402
from edge.engines.model import model_id_of, read_model_info, read_onnx_header  # noqa: E402
from edge.engines.yolo import Decoder  # noqa: E402

log = logging.getLogger("bench.engines")

DEFAULT_MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"
DEFAULT_PT = REPO / "models" / "pcb-yolo11n-320.pt"
DEFAULT_DATA = REPO / "build" / "datasets" / "deeppcb" / "data.yaml"
WORK = REPO / "build" / "bench"
OUT = REPO / "benchmarks" / "results"

TARGET_VS_ULTRA_SAME_RUNTIME = 0.85
TARGET_VS_ULTRA_PYTORCH = 0.5
TARGET_GLUE_MS = 1.0
TARGET_INT8_VS_FP32 = 0.5

# our engine -> the Ultralytics entry on the same runtime
SAME_RUNTIME = {
    "onnxruntime": "ultralytics-onnxruntime",
    "openvino": "ultralytics-openvino",
    "openvino-bf16": "ultralytics-openvino",  # Ultralytics compiles with the device default: bf16 on AMX CPUs
    "openvino-int8": "ultralytics-openvino-int8",
    "openvino-int8-noamx": "ultralytics-openvino-int8",
    "onnxruntime-float-input": "ultralytics-onnxruntime",
    "openvino-float-input": "ultralytics-openvino",
}


@dataclass
class Bench:
    """One engine under test: `step(frame) -> (full_ms, infer_ms, detections)`."""

    name: str
    kind: str  # "ours" or "ultralytics"
    runtime: str
    model: str
    step: Callable[[np.ndarray], tuple[float, float, int]]
    close: Callable[[], None]
    notes: dict[str, Any] = field(default_factory=dict)
    parts: tuple[Any, ...] | None = None  # ours: (Preprocessor, engine, Decoder)
    worker: Worker | None = None  # runs in its own process (a process-wide setting such as max_cpu_isa)
    full: list[float] = field(default_factory=list)
    infer: list[float] = field(default_factory=list)
    dets: list[int] = field(default_factory=list)
    round_p50: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------ ours


def ours(name: str, cfg: EngineConfigBase, conf: float, iou: float) -> Bench:
    engine = cfg.build(REPO)  # type: ignore[attr-defined]
    info = engine.load()
    pre = Preprocessor(engine.input_buffer()[0])
    shape = engine.output_shape() if hasattr(engine, "output_shape") else None
    dec = Decoder(info, conf=conf, iou=iou, output_shape=shape)
    clock = time.perf_counter_ns

    def step(frame: np.ndarray) -> tuple[float, float, int]:
        t0 = clock()
        geometry = pre(frame)
        t1 = clock()
        raw = engine.infer()
        t2 = clock()
        dets = dec(raw, geometry)
        t3 = clock()
        return (t3 - t0) / 1e6, (t2 - t1) / 1e6, len(dets)

    notes = {"model_id": info.model_id, "engine_version": getattr(engine, "version", None)}
    if getattr(engine, "kernels", None):
        notes["kernels"] = dict(engine.kernels)
    cap = getattr(cfg, "max_cpu_isa", None)
    if cap:
        notes["max_cpu_isa"] = cap
    return Bench(name, "ours", engine.runtime, str(cfg.model), step, engine.close, notes, (pre, engine, dec))


def warm_up(b: Bench, frames: list[np.ndarray], count: int) -> Bench:
    """`count` untimed frames through `b`."""
    for i in range(count):
        b.step(frames[i % len(frames)])
    return b


def run_block(
    make: Callable[[], Bench], kept: Bench | None, frames: list[np.ndarray], warmup: int
) -> list[tuple[float, float, int]]:
    """One engine's block of a round: every frame through `kept`, or through a fresh, warmed-up
    `make()` that is closed after it (--reload)."""
    live = kept if kept is not None else warm_up(make(), frames, warmup)
    rows = [live.step(frame) for frame in frames]
    if kept is None:
        live.close()
    return rows


# ------------------------------------------------------------------- ours, in a worker process

NO_AMX = "avx512_core_bf16"  # every instruction set of an AMX CPU but AMX (oneDNN's cap)
_MSG = "@@bench "  # prefix of the worker's protocol lines on its stdout


class Worker:
    """One of our engines in a child process of this script (`--worker`), driven round by round.

    For a setting that is process-wide: oneDNN reads its instruction-set cap (`max_cpu_isa`) once
    per process, so a capped OpenVINO engine cannot share the process with uncapped ones. The child
    loads the same frames (same arguments), runs exactly `ours()`'s path on them and times itself;
    the parent interleaves its rounds with the other engines' like any other row.
    """

    def __init__(self, spec: dict[str, Any], argv: list[str]) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", json.dumps(spec)]
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

    def round(self) -> list[tuple[float, float, int]]:
        return [(float(a), float(b), int(c)) for a, b, c in self.ask("round")["rows"]]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except RuntimeError:
                pass
            self.proc.wait(timeout=60)


def in_worker(name: str, spec: dict[str, Any], argv: list[str]) -> Bench:
    worker = Worker({**spec, "name": name}, argv)

    def step(frame: np.ndarray) -> tuple[float, float, int]:
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
                    rows = run_block(
                        lambda: ours(spec["name"], cfg, args.conf, args.iou),
                        None if args.reload else first,
                        frames,
                        args.warmup,
                    )
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


def isolated_pre_post(b: Bench, frames: list[np.ndarray], passes: int = 5) -> dict[str, Any]:
    """Our preprocess and decode alone (no inference in between), for BGR and mono 640x640 frames."""
    assert b.parts is not None
    pre, engine, dec = b.parts
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


def convert(frame: np.ndarray, color: str) -> np.ndarray:
    if color == "mono":
        return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def our_config(
    runtime: str,
    model: Path,
    threads: int,
    precision: str | None = None,
    *,
    fuse: bool = True,
    max_cpu_isa: str | None = None,
) -> EngineConfigBase:
    common: dict[str, Any] = {"model": str(model), "warmup": 3}
    if runtime in ("onnxruntime", "openvino"):
        common["fuse_preprocess"] = fuse
    if runtime == "onnxruntime":
        from edge.engines.onnxruntime import OnnxRuntimeEngineConfig

        return OnnxRuntimeEngineConfig(**common, providers=["CPUExecutionProvider"], intra_op_threads=threads)
    if runtime == "openvino":
        from edge.engines.openvino import OpenVinoEngineConfig

        return OpenVinoEngineConfig(
            **common, device="CPU", num_threads=threads, precision_hint=precision, max_cpu_isa=max_cpu_isa
        )
    if runtime == "tensorrt":
        from edge.engines.tensorrt import TensorRtEngineConfig

        return TensorRtEngineConfig(**common)
    raise ValueError(runtime)


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX INT8 (the kernels `max_cpu_isa` can keep an INT8 model off)."""
    from edge.engines.host import cpu_flags

    return "amx_int8" in cpu_flags()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AMX or AVX-512 BF16), so the bf16 row means something."""
    from edge.engines.host import cpu_flags

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


# ------------------------------------------------------------------------------ ultralytics


def ultralytics_openvino_dir(xml: Path, metadata: dict[str, str], name: str) -> Path:
    """An Ultralytics-style `<name>_openvino_model/` folder (model.xml/.bin + metadata.yaml)."""
    import yaml

    folder = WORK / f"{name}_openvino_model"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(xml, folder / "model.xml")
    shutil.copyfile(xml.with_suffix(".bin"), folder / "model.bin")
    keep = {
        k: v for k, v in metadata.items() if k in ("names", "imgsz", "stride", "task", "batch", "channels", "end2end")
    }
    (folder / "metadata.yaml").write_text(yaml.safe_dump(keep))
    return folder


def fp32_ir(model: Path) -> Path:
    """Our ONNX converted to an FP32 OpenVINO IR (for Ultralytics' OpenVINO backend)."""
    import openvino as ov

    out = WORK / f"{model.stem}-fp32.xml"
    ov.save_model(ov.convert_model(str(model)), str(out), compress_to_fp16=False)
    return out


def ultra(name: str, weights: Path, runtime: str, threads: int, conf: float, iou: float, imgsz: int) -> Bench:
    from ultralytics import YOLO

    yolo = YOLO(str(weights), task="detect")
    kwargs = {"conf": conf, "iou": iou, "imgsz": imgsz, "device": "cpu", "verbose": False}
    yolo.predict(np.full((imgsz, imgsz, 3), 114, np.uint8), **kwargs)  # sets up the predictor and backend
    import torch

    # Ultralytics' select_device() resets torch to cpu_count - 1 threads; its pre/post-processing runs
    # torch ops too, so every Ultralytics entry gets `threads` torch threads, whatever the runtime.
    torch.set_num_threads(threads)
    notes: dict[str, Any] = {
        "threads": enforce_threads(yolo, runtime, weights, threads),
        "torch_threads": torch.get_num_threads(),
    }
    clock = time.perf_counter_ns

    def step(frame: np.ndarray) -> tuple[float, float, int]:
        t0 = clock()
        r = yolo.predict(frame, **kwargs)[0]
        t1 = clock()
        return (t1 - t0) / 1e6, float(r.speed["inference"]), len(r.boxes)

    def close() -> None:
        nonlocal yolo
        yolo = None

    return Bench(name, "ultralytics", runtime, str(weights), step, close, notes)


def enforce_threads(yolo: Any, runtime: str, weights: Path, threads: int) -> str:
    """Give Ultralytics' runtime the same thread count as ours (it has no setting for it)."""
    backend = getattr(getattr(getattr(yolo, "predictor", None), "model", None), "backend", None)
    if backend is None:
        return "NOT SET: this Ultralytics version has no predictor.model.backend"
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        backend.session = ort.InferenceSession(str(weights), opts, providers=["CPUExecutionProvider"])
        return f"onnxruntime session rebuilt with intra_op_num_threads={threads}"
    if runtime == "openvino":
        import openvino as ov

        xml = next(Path(weights).glob("*.xml"))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        backend.ov_compiled_model = ov.Core().compile_model(str(xml), "CPU", config)
        return f"openvino recompiled on CPU with {config}"
    if runtime == "pytorch":
        import torch

        return f"torch.set_num_threads({threads}) (interop {torch.get_num_interop_threads()})"
    return "not set"


# ------------------------------------------------------------------------------------ stats


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def summarize(b: Bench) -> dict[str, Any]:
    full, inf = np.asarray(b.full), np.asarray(b.infer)
    other = (full - inf).tolist()
    return {
        "kind": b.kind,
        "runtime": b.runtime,
        "model": b.model,
        "samples": len(b.full),
        "full_ms": {"p50": pct(b.full, 50), "p99": pct(b.full, 99), "mean": round(float(full.mean()), 3)},
        "infer_ms": {"p50": pct(b.infer, 50), "p99": pct(b.infer, 99), "mean": round(float(inf.mean()), 3)},
        "pre_post_glue_ms": {"p50": pct(other, 50), "p99": pct(other, 99), "mean": round(float(np.mean(other)), 3)},
        "round_full_p50_ms": [round(v, 3) for v in b.round_p50],
        "detections_per_frame": round(float(np.mean(b.dets)), 3),
        **b.notes,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def round_ratios(a: list[float], b: list[float]) -> dict[str, Any] | None:
    """Round-by-round ratios of two engines' p50s (each pair measured minutes apart at most):
    their median and spread say how far machine noise could move the overall ratio."""
    if not a or len(a) != len(b):
        return None
    r = [x / y for x, y in zip(a, b, strict=True) if y]
    return {"median": round(float(np.median(r)), 4), "min": round(min(r), 4), "max": round(max(r), 4)}


def target(name: str, value: float | None, limit: float, what: str, extra: bool | None = True) -> dict[str, Any]:
    """met: False when over the limit or `extra` is False; None when a figure is missing."""
    if value is None:
        met = None
    elif value > limit or extra is False:
        met = False
    else:
        met = None if extra is None else True
    return {"target": name, "value": value, "limit": limit, "met": met, "what": what}


def load_frames(args: argparse.Namespace) -> tuple[list[np.ndarray], str]:
    val = DEFAULT_DATA.parent / "images" / "val"
    folder = args.frames or (val if val.is_dir() else REPO / "edge" / "demo_data" / "images")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".png", ".bmp"))
    if not files:
        raise SystemExit(f"no images in {folder}")
    idx = np.unique(np.linspace(0, len(files) - 1, min(args.images, len(files))).round().astype(int))
    frames = []
    flag = cv2.IMREAD_GRAYSCALE if args.color == "mono" else cv2.IMREAD_COLOR
    for i in idx:
        frame = cv2.imread(str(files[int(i)]), flag)
        if frame is None:
            raise SystemExit(f"cannot read {files[int(i)]}")
        frames.append(frame)
    return frames, str(folder)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for mod in ("onnxruntime", "openvino", "nncf", "ultralytics", "torch", "tensorrt"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", None) or m.get_version())
        except Exception:
            pass
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each engine, all frames, per round)")
    ap.add_argument("--images", type=int, default=50, help="frames per round")
    ap.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    ap.add_argument("--warmup", type=int, default=10, help="untimed frames per engine before the first round")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="FP32 ONNX model")
    ap.add_argument("--pt", type=Path, default=DEFAULT_PT, help="PyTorch checkpoint of the same model")
    ap.add_argument("--int8", type=Path, default=None, help="INT8 OpenVINO IR (default: make one with NNCF)")
    ap.add_argument("--calib", type=Path, default=None, help="calibration images when the INT8 IR is made here")
    ap.add_argument("--calib-count", type=int, default=300)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled data.yaml for the INT8 recall check")
    ap.add_argument("--split", default="val")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the FP32/INT8 accuracy comparison")
    ap.add_argument("--frames", type=Path, default=None, help="folder of frames (default: DeepPCB val)")
    ap.add_argument(
        "--color",
        choices=("bgr", "mono"),
        default="bgr",
        help="frames as BGR (colour camera) or mono, for every engine",
    )
    ap.add_argument("--engines", default=None, help="comma-separated subset of engine names to run")
    ap.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load each engine for its block only (default), or keep every engine loaded throughout",
    )
    ap.add_argument(
        "--int8-noamx",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"also run the INT8 model with max_cpu_isa={NO_AMX} (no AMX kernels), in its own process "
        "(default: on CPUs with AMX)",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: see Worker
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for engines.json and engines.png")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker is not None:
        cv2.setNumThreads(args.threads)
        return worker_main(args, json.loads(args.worker))
    for noisy in ("nncf", "ultralytics"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    WORK.mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(args.threads)
    load_start = os.getloadavg()

    model = args.model.resolve()
    info = read_model_info(model)
    imgsz = info.input_hw[0]
    metadata = read_onnx_header(model)[0]
    frames, frames_from = load_frames(args)
    wanted = set(args.engines.split(",")) if args.engines else None
    skipped: dict[str, str] = {}
    benches: list[Bench] = []
    makers: dict[str, Callable[[], Bench]] = {}

    def add(name: str, make: Callable[[], Bench]) -> None:
        if wanted is not None and name not in wanted:
            return
        try:
            bench = make()
            benches.append(bench)
            makers[name] = make
            if args.reload and bench.worker is None:
                bench.close()
            log.info("loaded %s", name)
        except ImportError as e:
            skipped[name] = f"not installed: {e}"
        except Exception as e:
            skipped[name] = f"{type(e).__name__}: {e}"
        if name in skipped:
            log.warning("skipping %s: %s", name, skipped[name])

    conf, iou, t = args.conf, args.iou, args.threads
    add("onnxruntime", lambda: ours("onnxruntime", our_config("onnxruntime", model, t), conf, iou))
    add("openvino", lambda: ours("openvino", our_config("openvino", model, t), conf, iou))
    for rt in ("onnxruntime", "openvino"):
        name = f"{rt}-float-input"
        add(name, lambda rt=rt, name=name: ours(name, our_config(rt, model, t, fuse=False), conf, iou))
    if cpu_has_bf16():  # our default on CPU is f32; bf16 is the opt-in `precision_hint: bf16`
        add("openvino-bf16", lambda: ours("openvino-bf16", our_config("openvino", model, t, "bf16"), conf, iou))
    int8: Path | None = None
    if wanted is None or wanted & {"openvino-int8", "openvino-int8-noamx", "ultralytics-openvino-int8"}:
        try:
            int8 = int8_model(args, model, skipped)
        except ImportError as e:
            skipped["openvino-int8"] = f"not installed: {e}"
    if int8 is not None:
        add("openvino-int8", lambda: ours("openvino-int8", our_config("openvino", int8, t), conf, iou))
        noamx = args.int8_noamx if args.int8_noamx is not None else cpu_has_amx()
        if noamx:
            spec = {"runtime": "openvino", "model": str(int8), "max_cpu_isa": NO_AMX}
            worker_argv = list(sys.argv[1:] if argv is None else argv)
            add("openvino-int8-noamx", lambda: in_worker("openvino-int8-noamx", spec, worker_argv))
    elif "openvino-int8" in skipped:
        skipped.setdefault("ultralytics-openvino-int8", skipped["openvino-int8"])
    add("tensorrt", lambda: ours("tensorrt", our_config("tensorrt", model, t), conf, iou))

    add("ultralytics-onnxruntime", lambda: ultra("ultralytics-onnxruntime", model, "onnxruntime", t, conf, iou, imgsz))
    add(
        "ultralytics-openvino",
        lambda: ultra(
            "ultralytics-openvino",
            ultralytics_openvino_dir(fp32_ir(model), metadata, f"{model.stem}-fp32"),
            "openvino",
            t,
            conf,
            iou,
            imgsz,
        ),
    )
    if int8 is not None:
        int8_path = int8
        add(
            "ultralytics-openvino-int8",
            lambda: ultra(
                "ultralytics-openvino-int8",
                ultralytics_openvino_dir(int8_path, metadata, f"{model.stem}-int8"),
                "openvino",
                t,
                conf,
                iou,
                imgsz,
            ),
        )
    if args.pt.is_file():
        add("ultralytics-pytorch", lambda: ultra("ultralytics-pytorch", args.pt, "pytorch", t, conf, iou, imgsz))
    elif wanted is None or "ultralytics-pytorch" in wanted:
        skipped["ultralytics-pytorch"] = f"no PyTorch checkpoint at {args.pt} (pass --pt)"
    if not benches:
        raise SystemExit(f"no engine could be loaded: {skipped}")

    # warm-up, then interleaved rounds. With --reload (the default) each engine is loaded for its
    # block and closed after it: several OpenVINO compiled models alive in one process slowed some
    # of them by up to 1.6x, persistently, whichever runtime wrapped them (build/u8/ovorder2.py).
    if not args.reload:
        for b in benches:
            if b.worker is None:  # a worker warms its own engine
                warm_up(b, frames, args.warmup)
    log.info("timing %s: %d rounds x %d frames", [b.name for b in benches], args.rounds, len(frames))
    gc.collect()
    gc.disable()  # a collection inside one engine's block would be charged to it
    try:
        for r in range(args.rounds):
            k = r % len(benches)
            for b in benches[k:] + benches[:k]:
                start = len(b.full)
                if b.worker is not None:
                    rows = b.worker.round()
                else:
                    rows = run_block(makers[b.name], None if args.reload else b, frames, args.warmup)
                    if args.reload:
                        gc.collect()  # the closed engine, before the next block
                for full_ms, infer_ms, n in rows:
                    b.full.append(full_ms)
                    b.infer.append(infer_ms)
                    b.dets.append(n)
                b.round_p50.append(float(np.percentile(b.full[start:], 50)))
            gc.collect()
            log.info("round %d/%d: %s", r + 1, args.rounds, {b.name: round(b.round_p50[-1], 2) for b in benches})
    finally:
        gc.enable()
    load_end = os.getloadavg()
    isolated = None
    first_ours = next((b for b in benches if b.kind == "ours"), None)
    if first_ours is not None:
        live = makers[first_ours.name]() if args.reload else first_ours
        isolated = isolated_pre_post(live, frames)
        if args.reload:
            live.close()

    accuracy_noamx: dict[str, Any] | None = None
    noamx_bench = next((b for b in benches if b.name == "openvino-int8-noamx"), None)
    if noamx_bench is not None and noamx_bench.worker is not None and not args.no_accuracy and args.data.exists():
        log.info("accuracy: FP32 vs INT8 with max_cpu_isa=%s (in the worker process)", NO_AMX)
        try:
            request = {"fp32": str(model), "data": str(args.data), "split": args.split}
            accuracy_noamx = noamx_bench.worker.ask("accuracy " + json.dumps(request))["accuracy"]
        except Exception as e:
            accuracy_noamx = {"error": f"{type(e).__name__}: {e}"}
    for b in benches:
        if not args.reload or b.worker is not None:
            b.close()

    engines = {b.name: summarize(b) for b in benches}
    full50: dict[str, float | None] = {name: ent["full_ms"]["p50"] for name, ent in engines.items()}
    ratios: dict[str, dict[str, Any]] = {}
    rounds = {name: ent["round_full_p50_ms"] for name, ent in engines.items()}
    for name, ent in engines.items():
        if ent["kind"] != "ours":
            continue
        same = SAME_RUNTIME.get(name)
        ratios[name] = {
            "vs_ultralytics_same_runtime": ratio(full50[name], full50.get(same)) if same else None,
            "same_runtime_entry": same if same in full50 else None,
            "vs_ultralytics_pytorch": ratio(full50[name], full50.get("ultralytics-pytorch")),
            "by_round_vs_ultralytics_same_runtime": round_ratios(rounds[name], rounds[same])
            if same in rounds
            else None,
            "by_round_vs_ultralytics_pytorch": round_ratios(rounds[name], rounds["ultralytics-pytorch"])
            if "ultralytics-pytorch" in rounds
            else None,
        }

    accuracy: dict[str, Any] | None = None
    if int8 is not None and not args.no_accuracy and "openvino-int8" in engines:
        if args.data.exists():
            from edge.quantization.int8_accuracy import compare_accuracy

            log.info("accuracy: FP32 vs INT8 on %s/%s (OpenVINO engine)", args.data, args.split)
            try:
                accuracy = compare_accuracy(model, int8, args.data, args.split, threads=t)
            except Exception as e:
                accuracy = {"error": f"{type(e).__name__}: {e}"}
        else:
            accuracy = {"error": f"{args.data} not found (edge-inspect dataset convert ...)"}

    ort, ov = engines.get("onnxruntime"), engines.get("openvino")

    from edge.thresholds import sidecar_path

    int8_has_sidecar = int8 is not None and sidecar_path(int8).is_file()

    def recall_unchanged(acc: dict[str, Any] | None) -> bool | None:
        """With the thresholds the IR is deployed with: its own sidecar's (as `quantize` writes it:
        calibrated like the FP32 model's; judged in sample and cross-fitted), else the FP32 model's."""
        if acc is None or "error" in acc:
            return None
        own = acc.get("own_thresholds")
        if int8_has_sidecar and own:
            return bool(own["part_recall_unchanged"])
        return bool(acc["part_recall_unchanged"])

    int8_rows = {"openvino-int8": accuracy, "openvino-int8-noamx": accuracy_noamx}
    targets = [
        target(
            "onnxruntime full path vs Ultralytics predict on onnxruntime",
            ratios.get("onnxruntime", {}).get("vs_ultralytics_same_runtime"),
            TARGET_VS_ULTRA_SAME_RUNTIME,
            "p50 full-path ratio",
        ),
        *(
            target(
                f"{n} full path vs Ultralytics PyTorch CPU predict",
                ratios[n]["vs_ultralytics_pytorch"],
                TARGET_VS_ULTRA_PYTORCH,
                "p50 full-path ratio",
            )
            for n in ratios
        ),
        *(
            target(
                f"{n} pre+post+glue", engines[n]["pre_post_glue_ms"]["p50"], TARGET_GLUE_MS, "p50 ms, 640x640 source"
            )
            for n in ratios
        ),
        *(
            target(
                f"{n} full path vs our FP32 openvino, part recall unchanged",
                ratio(engines[n]["full_ms"]["p50"], ov["full_ms"]["p50"]) if ov else None,
                TARGET_INT8_VS_FP32,
                "p50 full-path ratio; met also needs INT8 part recall >= FP32 on the validation split, "
                + (
                    "each model with its own thresholds, in sample and cross-fitted"
                    if int8_has_sidecar
                    else "with the FP32 model's thresholds"
                )
                + ("" if n == "openvino-int8" else f" (measured with max_cpu_isa={NO_AMX} in the worker)"),
                extra=recall_unchanged(acc),
            )
            for n, acc in int8_rows.items()
            if n in engines
        ),
    ]
    int8_by_round = {
        n: round_ratios(rounds[n], rounds["openvino"]) for n in int8_rows if n in rounds and "openvino" in rounds
    }
    doc = {
        "benchmark": "benchmarks/engines.py",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": {"onnx": str(model), "model_id": info.model_id, "int8": str(int8) if int8 else None},
        "pt": {"path": str(args.pt), "model_id": model_id_of(args.pt)} if args.pt.is_file() else None,
        "threads": {
            "all_runtimes": t,
            "note": "same thread count for every runtime: ours via engine config, Ultralytics' ORT session and "
            "OpenVINO compiled model rebuilt with it, torch.set_num_threads (PyTorch model and Ultralytics' torch "
            "pre/post ops), cv2.setNumThreads",
        },
        "frames": {
            "count": len(frames),
            "from": frames_from,
            "shape": list(frames[0].shape),
            "dtype": f"uint8 {'BGR' if args.color == 'bgr' else 'mono'}",
        },
        "rounds": args.rounds,
        "reload": args.reload,
        "warmup": args.warmup,
        "conf": conf,
        "iou": iou,
        "host": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in load_end],
        },
        "versions": versions(),
        "engines": engines,
        "skipped": skipped,
        "ratios": ratios,
        "our_pre_post_glue_p50_ms_640x640": ort["pre_post_glue_ms"]["p50"] if ort else None,
        "our_pre_post_isolated": isolated,
        "int8_accuracy": accuracy,
        "int8_noamx_accuracy": accuracy_noamx,
        "int8_vs_fp32_by_round": int8_by_round,
        "targets": targets,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "engines.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    png = plot(doc, args.out / "engines.png")
    report(doc, json_path, png)
    return 0


def report(doc: dict[str, Any], json_path: Path, png: Path | None) -> None:
    print(f"\n{'engine':28s} {'full p50':>9s} {'p99':>8s} {'infer p50':>10s} {'other p50':>10s} {'dets':>6s}")
    for n, e in doc["engines"].items():
        print(
            f"{n:28s} {e['full_ms']['p50']:9.2f} {e['full_ms']['p99']:8.2f} {e['infer_ms']['p50']:10.2f} "
            f"{e['pre_post_glue_ms']['p50']:10.2f} {e['detections_per_frame']:6.2f}"
        )
    for n, reason in doc["skipped"].items():
        print(f"{n:28s} skipped: {reason}")
    print("\nratios of full-path p50s: all frames (by round: median, min-max)")
    for n, r in doc["ratios"].items():
        parts = []
        for key, label in (("same_runtime", "vs Ultralytics same runtime"), ("pytorch", "vs Ultralytics PyTorch")):
            overall, by_round = r[f"vs_ultralytics_{key}"], r[f"by_round_vs_ultralytics_{key}"]
            if overall is not None:
                spread = f" ({by_round['median']}, {by_round['min']}-{by_round['max']})" if by_round else ""
                parts.append(f"{label} {overall}{spread}")
        print(f"  {n:26s} " + "; ".join(parts))
    print("\ntargets:")
    for t in doc["targets"]:
        state = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        print(f"  [{state:7s}] {t['target']}: {t['value']} (limit {t['limit']}; {t['what']})")
    iso = doc.get("our_pre_post_isolated")
    if iso:
        print(
            f"\nour preprocess + decode alone ({iso['engine']}): "
            + ", ".join(
                f"{c} {iso[c]['shape']}: {iso[c]['preprocess_us_p50']:.0f} + {iso[c]['decode_us_p50']:.0f} us"
                for c in ("bgr", "mono")
            )
        )
    for key, label in (("int8_accuracy", "INT8"), ("int8_noamx_accuracy", f"INT8 (max_cpu_isa={NO_AMX})")):
        acc = doc.get(key)
        if acc and "error" not in acc:
            f, i = acc["fp32"], acc["int8"]
            print(
                f"\n{label} accuracy on {acc['split']}: mAP50 {f['mAP50']:.4f} -> {i['mAP50']:.4f}, part recall "
                f"{f['part_recall']:.4f} -> {i['part_recall']:.4f}, FRR {f['false_reject_rate']:.4f} -> "
                f"{i['false_reject_rate']:.4f} (the FP32 model's thresholds for both)"
            )
            own = acc.get("own_thresholds")
            if own:
                ins, cf = own["in_sample"], own.get("cross_fitted")
                print(
                    f"  each with its own thresholds: part recall / FRR in sample {ins['fp32']['part_recall']:.4f} / "
                    f"{ins['fp32']['false_reject_rate']:.4f} -> {ins['int8']['part_recall']:.4f} / "
                    f"{ins['int8']['false_reject_rate']:.4f}"
                    + (
                        f", cross-fitted {cf['fp32']['part_recall']:.4f} / {cf['fp32']['false_reject_rate']:.4f} -> "
                        f"{cf['int8']['part_recall']:.4f} / {cf['int8']['false_reject_rate']:.4f}"
                        if cf
                        else ""
                    )
                )
        elif acc:
            print(f"\n{label} accuracy: {acc['error']}")
    for n, r in (doc.get("int8_vs_fp32_by_round") or {}).items():
        if r:
            print(f"{n} vs our FP32 openvino by round: median {r['median']}, {r['min']}-{r['max']}")
    print(
        f"\nthreads {doc['threads']['all_runtimes']}, load average {doc['host']['loadavg_start']} -> "
        f"{doc['host']['loadavg_end']}\nwrote {json_path}" + (f" and {png}" if png else "")
    )


def plot(doc: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart")
        return None
    names = list(doc["engines"])
    e = doc["engines"]
    infer = np.array([e[n]["infer_ms"]["p50"] for n in names])
    other = np.array([max(0.0, e[n]["full_ms"]["p50"] - e[n]["infer_ms"]["p50"]) for n in names])
    p99 = np.array([e[n]["full_ms"]["p99"] for n in names])
    colors = ["tab:blue" if e[n]["kind"] == "ours" else "tab:gray" for n in names]
    full = infer + other
    xmax = float(full.max()) * 1.45
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(names) + 2), tight_layout=True)
    y = np.arange(len(names))
    ax.barh(y, infer, color=colors, label="inference p50")
    ax.barh(y, other, left=infer, color=colors, alpha=0.45, hatch="//", label="pre + post + glue p50")
    shown = np.minimum(p99, xmax * 0.995)
    ax.plot(shown, y, "k|", markersize=14, label="full path p99 (clipped at the edge)")
    for i, n in enumerate(names):
        x = max(full[i], shown[i]) + xmax * 0.01
        text = f"{e[n]['full_ms']['p50']:.1f} ms (p99 {p99[i]:.0f})"
        ax.text(min(x, xmax * 0.78), i - 0.3, text, va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame (640x640 source, batch 1), p50 of the interleaved rounds")
    ax.set_title(f"Full path per engine, {doc['threads']['all_runtimes']} threads each (blue: ours, grey: Ultralytics)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8, frameon=False)
    ax.set_xlim(0, xmax)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
