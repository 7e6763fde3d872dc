"""Engine benchmark: our full path on each runtime against Ultralytics `predict` on the same model.

In ONE process, interleaved: every round runs each engine over the same frames, one engine after
the other (the order rotates from round to round), so drifting machine load hits all engines alike.

- ours, per runtime: the service's own path, `Inspector.judge` (letterbox into the engine's input
  -> `engine.infer()` -> decode + NMS + scaling to source pixels -> the decision rules) on the
  engine the `engine:` section of a config would build (`benchmarks/engines_ours.py`): onnxruntime,
  openvino (f32: our default on CPU), openvino-bf16 (the opt-in `precision_hint: bf16`, on CPUs
  with native bf16 only; it is what OpenVINO, and so Ultralytics, runs by default there),
  openvino-int8 (an NNCF INT8 IR: `--int8`, or produced with `edge.quantization.quantize` when
  nncf is installed), openvino-int8-noamx (the same INT8 IR with `max_cpu_isa: avx512_core_bf16`,
  i.e. no AMX kernels, on CPUs with AMX; oneDNN reads that cap once per process, so this row runs
  in a worker process of this script, driven round by round like the others, and its INT8
  accuracy is measured there too) and tensorrt where available.
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

Modules: `engines_common` (the Bench record, frames, a timed block), `engines_ours` (our rows,
the worker process), `engines_ultralytics` (theirs), `engines_report` (figures, targets, chart).

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
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the repository (edge, cameras) and the modules beside this one

from engines_common import REPO, WORK, Bench, cpu_name, load_frames, run_block, versions, warm_up  # noqa: E402
from engines_ours import (  # noqa: E402
    NO_AMX,
    cpu_has_amx,
    cpu_has_bf16,
    in_worker,
    int8_model,
    isolated_pre_post,
    our_config,
    ours,
    worker_main,
)
from engines_report import plot, ratios_of, report, round_ratios, summarize, targets_of  # noqa: E402
from engines_ultralytics import fp32_ir, ultra, ultralytics_openvino_dir  # noqa: E402

from edge.engines.model import model_id_of, read_model_info, read_onnx_header  # noqa: E402

log = logging.getLogger("bench.engines")

DEFAULT_MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"
DEFAULT_PT = REPO / "models" / "pcb-yolo11n-320.pt"
DEFAULT_DATA = REPO / "build" / "datasets" / "deeppcb" / "data.yaml"
OUT = REPO / "benchmarks" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: see engines_ours.Worker
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for engines.json and engines.png")
    return ap.parse_args(argv)


@dataclass
class Rows:
    """The engines under test, how to make each afresh, and those skipped with the reason."""

    benches: list[Bench] = field(default_factory=list)
    makers: dict[str, Callable[[], Bench]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    int8: Path | None = None


def load_rows(args: argparse.Namespace, model: Path, argv: list[str]) -> Rows:
    """Every engine row this host can run (or the `--engines` subset), each loaded once to check it."""
    wanted = set(args.engines.split(",")) if args.engines else None
    rows = Rows()
    info = read_model_info(model)
    imgsz = info.input_hw[0]
    metadata = read_onnx_header(model)[0]

    def add(name: str, make: Callable[[], Bench]) -> None:
        if wanted is not None and name not in wanted:
            return
        try:
            bench = make()
            rows.benches.append(bench)
            rows.makers[name] = make
            if args.reload and bench.worker is None:
                bench.close()
            log.info("loaded %s", name)
        except ImportError as e:
            rows.skipped[name] = f"not installed: {e}"
        except Exception as e:
            rows.skipped[name] = f"{type(e).__name__}: {e}"
        if name in rows.skipped:
            log.warning("skipping %s: %s", name, rows.skipped[name])

    conf, iou, t = args.conf, args.iou, args.threads
    add("onnxruntime", lambda: ours("onnxruntime", our_config("onnxruntime", model, t), conf, iou))
    add("openvino", lambda: ours("openvino", our_config("openvino", model, t), conf, iou))

    def float_input(runtime: str) -> Callable[[], Bench]:
        return lambda: ours(f"{runtime}-float-input", our_config(runtime, model, t, fuse=False), conf, iou)

    for rt in ("onnxruntime", "openvino"):
        add(f"{rt}-float-input", float_input(rt))
    if cpu_has_bf16():  # our default on CPU is f32; bf16 is the opt-in `precision_hint: bf16`
        add("openvino-bf16", lambda: ours("openvino-bf16", our_config("openvino", model, t, "bf16"), conf, iou))
    int8: Path | None = None
    if wanted is None or wanted & {"openvino-int8", "openvino-int8-noamx", "ultralytics-openvino-int8"}:
        try:
            int8 = int8_model(args, model, rows.skipped)
        except ImportError as e:
            rows.skipped["openvino-int8"] = f"not installed: {e}"
    rows.int8 = int8
    if int8 is not None:
        add("openvino-int8", lambda: ours("openvino-int8", our_config("openvino", int8, t), conf, iou))
        noamx = args.int8_noamx if args.int8_noamx is not None else cpu_has_amx()
        if noamx:
            spec = {"runtime": "openvino", "model": str(int8), "max_cpu_isa": NO_AMX}
            add("openvino-int8-noamx", lambda: in_worker("openvino-int8-noamx", Path(__file__), spec, argv))
    elif "openvino-int8" in rows.skipped:
        rows.skipped.setdefault("ultralytics-openvino-int8", rows.skipped["openvino-int8"])
    add("tensorrt", lambda: ours("tensorrt", our_config("tensorrt", model, t), conf, iou))

    add("ultralytics-onnxruntime", lambda: ultra("ultralytics-onnxruntime", model, "onnxruntime", t, conf, iou, imgsz))
    fp32_dir = lambda: ultralytics_openvino_dir(fp32_ir(model), metadata, f"{model.stem}-fp32")  # noqa: E731
    add("ultralytics-openvino", lambda: ultra("ultralytics-openvino", fp32_dir(), "openvino", t, conf, iou, imgsz))
    if int8 is not None:
        int8_dir = lambda: ultralytics_openvino_dir(int8, metadata, f"{model.stem}-int8")  # noqa: E731
        add(
            "ultralytics-openvino-int8",
            lambda: ultra("ultralytics-openvino-int8", int8_dir(), "openvino", t, conf, iou, imgsz),
        )
    if args.pt.is_file():
        add("ultralytics-pytorch", lambda: ultra("ultralytics-pytorch", args.pt, "pytorch", t, conf, iou, imgsz))
    elif wanted is None or "ultralytics-pytorch" in wanted:
        rows.skipped["ultralytics-pytorch"] = f"no PyTorch checkpoint at {args.pt} (pass --pt)"
    return rows


def time_rounds(args: argparse.Namespace, rows: Rows, frames: list[np.ndarray]) -> None:
    """Warm-up, then the interleaved rounds: each engine's block in turn, the order rotating.

    With --reload (the default) each engine is loaded for its block and closed after it: several
    OpenVINO compiled models alive in one process slowed some of them by up to 1.6x, persistently,
    whichever runtime wrapped them (build/u8/ovorder2.py)."""
    benches = rows.benches
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
                    block = b.worker.round()
                else:
                    block = run_block(rows.makers[b.name], None if args.reload else b, frames, args.warmup)
                    if args.reload:
                        gc.collect()  # the closed engine, before the next block
                for full_ms, infer_ms, n in block:
                    b.full.append(full_ms)
                    b.infer.append(infer_ms)
                    b.dets.append(n)
                b.round_p50.append(float(np.percentile(b.full[start:], 50)))
            gc.collect()
            log.info("round %d/%d: %s", r + 1, args.rounds, {b.name: round(b.round_p50[-1], 2) for b in benches})
    finally:
        gc.enable()


def pre_post_alone(args: argparse.Namespace, rows: Rows, frames: list[np.ndarray]) -> dict[str, Any] | None:
    """Our preprocess and decode timed alone, on the first of our engines."""
    first = next((b for b in rows.benches if b.kind == "ours" and b.worker is None), None)
    if first is None:
        return None
    live = rows.makers[first.name]() if args.reload else first
    try:
        return isolated_pre_post(live, frames)
    finally:
        if args.reload:
            live.close()


def noamx_accuracy(args: argparse.Namespace, rows: Rows, model: Path) -> dict[str, Any] | None:
    """FP32 vs INT8 accuracy measured in the no-AMX worker (its cap applies to the INT8 model there)."""
    bench = next((b for b in rows.benches if b.name == "openvino-int8-noamx"), None)
    if bench is None or bench.worker is None or args.no_accuracy or not args.data.exists():
        return None
    log.info("accuracy: FP32 vs INT8 with max_cpu_isa=%s (in the worker process)", NO_AMX)
    try:
        request = {"fp32": str(model), "data": str(args.data), "split": args.split}
        accuracy: dict[str, Any] = bench.worker.ask("accuracy " + json.dumps(request))["accuracy"]
        return accuracy
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def int8_accuracy(args: argparse.Namespace, model: Path, int8: Path | None, ran: bool) -> dict[str, Any] | None:
    """FP32 vs INT8 accuracy on the labelled split, both through the OpenVINO engine (in this process)."""
    if int8 is None or args.no_accuracy or not ran:
        return None
    if not args.data.exists():
        return {"error": f"{args.data} not found (edge-inspect dataset convert ...)"}
    from edge.quantization.int8_accuracy import compare_accuracy

    log.info("accuracy: FP32 vs INT8 on %s/%s (OpenVINO engine)", args.data, args.split)
    try:
        return compare_accuracy(model, int8, args.data, args.split, threads=args.threads)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    frames, frames_from = load_frames(args)
    rows = load_rows(args, model, list(sys.argv[1:] if argv is None else argv))
    if not rows.benches:
        raise SystemExit(f"no engine could be loaded: {rows.skipped}")
    time_rounds(args, rows, frames)
    load_end = os.getloadavg()
    isolated = pre_post_alone(args, rows, frames)
    accuracy_noamx = noamx_accuracy(args, rows, model)  # before the worker closes
    for b in rows.benches:
        if not args.reload or b.worker is not None:
            b.close()

    engines = {b.name: summarize(b) for b in rows.benches}
    ratios = ratios_of(engines)
    int8 = rows.int8
    accuracy = int8_accuracy(args, model, int8, "openvino-int8" in engines)
    from edge.thresholds import sidecar_path

    int8_has_sidecar = int8 is not None and sidecar_path(int8).is_file()
    int8_rows = {"openvino-int8": accuracy, "openvino-int8-noamx": accuracy_noamx}
    rounds = {name: ent["round_full_p50_ms"] for name, ent in engines.items()}
    int8_by_round = {
        n: round_ratios(rounds[n], rounds["openvino"]) for n in int8_rows if n in rounds and "openvino" in rounds
    }
    ort = engines.get("onnxruntime")
    t = args.threads
    doc = {
        "benchmark": "benchmarks/engines.py",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": {"onnx": str(model), "model_id": model_id_of(model), "int8": str(int8) if int8 else None},
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
        "conf": args.conf,
        "iou": args.iou,
        "host": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in load_end],
        },
        "versions": versions(),
        "engines": engines,
        "skipped": rows.skipped,
        "ratios": ratios,
        "our_pre_post_glue_p50_ms_640x640": ort["pre_post_glue_ms"]["p50"] if ort else None,
        "our_pre_post_isolated": isolated,
        "int8_accuracy": accuracy,
        "int8_noamx_accuracy": accuracy_noamx,
        "int8_vs_fp32_by_round": int8_by_round,
        "targets": targets_of(engines, ratios, int8_rows, int8_has_sidecar),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "engines.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    png = plot(doc, args.out / "engines.png")
    report(doc, json_path, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
