"""CPU headroom benchmark: what any other work on the station costs the pipeline's throughput.

The PLC bridge (issue 15) and the operator surface (issue 16) are judged by the saturated
pipeline's throughput with them on against off (target >= 0.97x). This benchmark measures the
price of CPU work as such on this host, with nothing of ours doing it: the pipeline runs
saturated (replay paced by the pipeline, 2 frames in flight, no sinks), and a listener hands
every verdict to a background thread that burns a fixed amount of CPU for it:

- ``native``: SHA-256 over a buffer (hashlib releases the GIL: like JPEG encoding, SQLite, TLS);
- ``python``: a pure-Python loop holding the GIL (like asyncua building and encoding a message).

Each amount (``--work-ms``, calibrated on this host at start) and kind runs interleaved with
runs without background work, round by round in a shuffled order; throughput ratio = fps(with
work) / fps(without) in the same round. Also reported: the background thread's measured CPU per
frame, and the amplification = (fraction of throughput lost) / (background CPU / the pipeline's
CPU per frame without it), fitted over every run of a kind: 1.0 means the work cost exactly its
own CPU share; above 1, the inference thread pool (ONNX Runtime's workers wait at a barrier for
every one of them) loses more than the work took. The work budget that keeps a ratio of 0.97 is
printed: what a sink, a web app, or the subscribers of a test rig may spend per frame on this
host. An A/A arm (the same pipeline, no work, run twice a round) shows the spread this host's
noise alone gives a throughput ratio.

Writes benchmarks/results/headroom.json and headroom.png.

    .venv/bin/python benchmarks/headroom.py [--frames 300] [--rounds 5] [--work-ms 1 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import queue
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"

from edge.app import build_service  # noqa: E402
from edge.config import parse_config  # noqa: E402
from edge.demo import DEMO_DATA  # noqa: E402

_BUF = os.urandom(1 << 16)  # 64 KiB: ~0.05 ms a unit, fine-grained amounts


def _native(units: int) -> None:
    for _ in range(units):
        hashlib.sha256(_BUF).digest()  # GIL released while hashing


def _python(units: int) -> None:
    for _ in range(units):
        x = 0
        for i in range(2000):
            x += i * i


def calibrate(fn: Any, target_s: float = 0.3) -> float:
    """Units of `fn` per millisecond of CPU (thread CPU time, the best of 3)."""
    best = 0.0
    for _ in range(3):
        n = 1
        while True:
            t0 = time.thread_time()
            fn(n)
            dt = time.thread_time() - t0
            if dt >= target_s:
                break
            n *= 2
        best = max(best, n / (dt * 1e3))
    return best


class Burner:
    """A background thread doing `units` of work for every verdict handed to it."""

    def __init__(self, fn: Any, units: int) -> None:
        self.fn, self.units = fn, units
        self.q: queue.Queue[Any] = queue.Queue()
        self.cpu_s = 0.0
        self.done = 0
        self.thread = threading.Thread(target=self._run, name="background-work", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            t0 = time.thread_time()
            self.fn(self.units)
            self.cpu_s += time.thread_time() - t0
            self.done += 1

    def stop(self) -> None:
        self.q.put(None)
        self.thread.join(60)


def make_config(work: Path, engine: str) -> Any:
    text = yaml.safe_dump({
        "version": "bench-headroom",
        "cameras": [{"type": "replay", "name": "line1", "path": str(DEMO_DATA / "images"), "rate_ppm": 0,
                     "loop": True, "max_in_flight": 2}],
        "engine": {"type": engine, "model": str(MODEL)},
        "pipeline": {"budget_ms": 1000, "ring_slots": 8},
        "sinks": [],
        "metrics": {"port": 0},
        "state_dir": str(work / "state"),
    })
    return parse_config(text, "<bench-headroom>", base_dir=work)


def run(cfg: Any, frames: int, burner: Burner | None, warmup: int = 20) -> dict[str, Any]:
    service = build_service(cfg, max_frames=frames)
    marks: dict[str, Any] = {}
    count = [0]

    def listener(v: Any, _frame: Any) -> None:
        count[0] += 1
        if burner is not None:
            burner.q.put(v.result_id)
        if count[0] in (warmup, frames):
            at = "0" if count[0] == warmup else "1"
            marks["t" + at] = v.decided_ns
            marks["cpu" + at] = resource.getrusage(resource.RUSAGE_SELF)
            marks["bg" + at] = burner.cpu_s if burner is not None else 0.0

    service.pipeline.subscribe(listener, "benchmark")
    service.start(serve_metrics=False)
    service.pipeline.wait(900)
    service.stop()
    steady = frames - warmup
    c0, c1 = marks["cpu0"], marks["cpu1"]
    cpu_s = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    return {
        "fps": steady / ((marks["t1"] - marks["t0"]) / 1e9),
        "cpu_ms_per_frame": cpu_s * 1e3 / steady,
        "background_cpu_ms_per_frame": (marks["bg1"] - marks["bg0"]) * 1e3 / steady,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work-ms", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--kinds", nargs="+", choices=("native", "python"), default=["native", "python"])
    ap.add_argument("--engine", default="onnxruntime")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    fns = {"native": _native, "python": _python}
    per_ms = {k: calibrate(fns[k]) for k in args.kinds}
    print("calibrated units per ms:", {k: round(v, 3) for k, v in per_ms.items()}, flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-headroom-"))
    cfg = make_config(work, args.engine)
    rng = random.Random(args.seed)
    # "again": the same pipeline with no background work, a second time: the A/A ratio shows what
    # this host's run-to-run noise alone does to a throughput ratio
    arms = [("none", 0.0), ("again", 0.0)] + [(k, ms) for k in args.kinds for ms in args.work_ms]
    rounds: list[dict[str, Any]] = []
    load0 = os.getloadavg()
    for r in range(args.rounds):
        order = arms[:]
        rng.shuffle(order)
        row: dict[str, Any] = {}
        for kind, ms in order:
            burner = None
            if kind not in ("none", "again"):
                units = max(1, round(per_ms[kind] * ms))
                burner = Burner(fns[kind], units)
            try:
                res = run(cfg, args.frames, burner)
            finally:
                if burner is not None:
                    burner.stop()
            row[f"{kind}:{ms:g}"] = res
            print(f"round {r + 1} {kind} {ms:g} ms: {res['fps']:.1f} fps, background "
                  f"{res['background_cpu_ms_per_frame']:.2f} ms/frame", flush=True)
        base = row["none:0"]
        for res in row.values():
            res["ratio"] = res["fps"] / base["fps"]
            if res["background_cpu_ms_per_frame"] > 0:
                share = res["background_cpu_ms_per_frame"] / base["cpu_ms_per_frame"]
                res["amplification"] = (1 - res["ratio"]) / share
        rounds.append(row)
    summary: dict[str, Any] = {}
    for kind, ms in arms[1:]:
        key = f"{kind}:{ms:g}"
        ratios = [rw[key]["ratio"] for rw in rounds]
        summary[key] = {
            "ratio_median": round(statistics.median(ratios), 4),
            "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4),
            "background_cpu_ms_per_frame": round(statistics.median(rw[key]["background_cpu_ms_per_frame"]
                                                                   for rw in rounds), 3),
        }
    base_cpu = statistics.median(rw["none:0"]["cpu_ms_per_frame"] for rw in rounds)
    budget: dict[str, Any] = {}
    for kind in args.kinds:
        # throughput lost per ms of background CPU per frame: least squares through the origin over
        # every run of this kind; the work per frame that keeps 0.97x follows from it
        pts = [(rw[f"{kind}:{ms:g}"]["background_cpu_ms_per_frame"], 1 - rw[f"{kind}:{ms:g}"]["ratio"])
               for rw in rounds for ms in args.work_ms]
        slope = sum(x * y for x, y in pts) / sum(x * x for x, _ in pts)
        budget[kind] = {
            "loss_per_ms": round(slope, 4),
            "amplification": round(slope * base_cpu, 2),  # 1.0: the work costs exactly its CPU share
            "ms_per_frame_for_0_97x": round(0.03 / slope, 3) if slope > 0 else None,
        }
    aa = [rw["again:0"]["ratio"] for rw in rounds]
    result = {
        "benchmark": "headroom",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average_start": load0, "load_average_end": os.getloadavg()},
        "engine": args.engine,
        "model": MODEL.name,
        "frames_per_run": args.frames,
        "calibrated_units_per_ms": per_ms,
        "fps_none_median": round(statistics.median(rw["none:0"]["fps"] for rw in rounds), 2),
        "pipeline_cpu_ms_per_frame_none_median": round(base_cpu, 2),
        "aa_ratio": {"median": round(statistics.median(aa), 4), "min": round(min(aa), 4), "max": round(max(aa), 4),
                     "stdev": round(statistics.stdev(aa), 4) if len(aa) > 1 else None},
        "summary": summary,
        "work_per_frame": budget,
        "rounds": rounds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "headroom.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args, args.out / "headroom.png")
    print(json.dumps({k: result[k] for k in ("fps_none_median", "pipeline_cpu_ms_per_frame_none_median",
                                              "aa_ratio", "summary", "work_per_frame")}, indent=1))
    return 0


def plot(result: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, marker in (("native", "o"), ("python", "s")):
        if kind not in args.kinds:
            continue
        xs, ys = [], []
        for rw in result["rounds"]:
            for ms in args.work_ms:
                res = rw[f"{kind}:{ms:g}"]
                xs.append(res["background_cpu_ms_per_frame"])
                ys.append(res["ratio"])
        ax.plot(xs, ys, marker, alpha=0.7, label=f"{kind} (GIL {'released' if kind == 'native' else 'held'})")
    aa = [rw["again:0"]["ratio"] for rw in result["rounds"]]
    ax.plot([0.0] * len(aa), aa, "D", color="tab:grey", alpha=0.7, label="A/A: no work, the same pipeline again")
    ax.axhline(0.97, color="tab:red", ls="--", lw=1, label="0.97x (issues 15, 16)")
    ax.set_xlabel("background CPU per frame (ms, measured)")
    ax.set_ylabel("saturated throughput, with / without")
    ax.set_title(f"CPU headroom, {result['host']['cpus']} CPUs, {result['engine']}, "
                 f"{result['fps_none_median']:.0f} fps alone", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
