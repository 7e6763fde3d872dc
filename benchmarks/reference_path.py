"""Golden-reference full path: the shipped setup against the one issue #17 started from, interleaved.

- before: the golden-reference model and thresholds as shipped at commit e6e0870 (read with
  `git show`, written to a temporary folder), no `reference_align`, no difference evidence
  (neither existed in the demo then).
- now: `models/pcb-ref-yolo11n-320.onnx` with its thresholds, `reference_align` 8 px and the
  difference-evidence rule on (the demo's settings).

Both run through the service itself (replay camera on `edge/demo_data/line` with each board's
reference, ONNX Runtime, no sinks, audit, evidence or web app), in one process, round by round in
ABBA order on the same frames: saturated (2 frames in flight: throughput) and unsaturated (1 in
flight: capture-to-verdict latency without queueing behind the frame ahead). The full path of one
frame is its capture-to-verdict latency unsaturated. Bar (issue #17): now <= 1.3x before.
Writes benchmarks/results/reference/path.json and path.png.

    .venv/bin/python benchmarks/reference_path.py [--frames 200] [--rounds 4] [--before-commit e6e0870]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
MODEL = REPO / "models" / "pcb-ref-yolo11n-320.onnx"

from edge.config import parse_config  # noqa: E402
from edge.demo import DEMO_DATA  # noqa: E402

run = __import__("web").run  # benchmarks/web.py: one run through the service (rates, latencies, CPU)


def old_model(commit: str, out: Path) -> Path:
    """The golden-reference model and its thresholds as they were at `commit`."""
    out.mkdir(parents=True, exist_ok=True)
    for suffix in (".onnx", ".thresholds.yaml"):
        blob = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:models/pcb-ref-yolo11n-320{suffix}"],
            check=True,
            capture_output=True,
        ).stdout
        (out / f"pcb-ref-yolo11n-320{suffix}").write_bytes(blob)
    return out / "pcb-ref-yolo11n-320.onnx"


def make_config(model: Path, now: bool, in_flight: int, state: Path) -> Any:
    raw = {
        "version": "bench-reference",
        "cameras": [
            {
                "type": "replay",
                "name": "line1",
                "path": str(DEMO_DATA / "line"),
                "references": str(DEMO_DATA / "references"),
                "rate_ppm": 0,
                "loop": True,
                "max_in_flight": in_flight,
            }
        ],
        "engine": {"type": "onnxruntime", "model": str(model)},
        "decision": {
            "min_confidence": 0.25,
            "thresholds_file": "auto",
            "difference_evidence": {"enabled": now},
        },
        "pipeline": {"budget_ms": 1000, "ring_slots": 8},
        "sinks": [],
        "metrics": {"port": 0},
        "state_dir": str(state),
        "audit": {"enabled": False},
        "reference_align": {"max_shift_px": 8 if now else 0},
    }
    return parse_config(yaml.safe_dump(raw), "<bench>", base_dir=REPO)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = result["rounds"]
    x = list(range(1, len(rounds) + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for which, colour in (("before", "tab:grey"), ("now", "tab:blue")):
        axes[0].plot(
            x, [r[f"{which}_unsaturated"]["latency_ms_p50"] for r in rounds], "o-", color=colour, label=f"{which} p50"
        )
        axes[0].plot(
            x, [r[f"{which}_unsaturated"]["latency_ms_p99"] for r in rounds], "s--", color=colour, label=f"{which} p99"
        )
        axes[1].plot(x, [r[f"{which}_saturated"]["fps"] for r in rounds], "o-", color=colour, label=which)
    axes[0].set(title="full path, capture to verdict (1 in flight)", xlabel="round", ylabel="ms")
    axes[1].set(title="throughput (2 in flight)", xlabel="round", ylabel="frames/s")
    for a in axes:
        a.legend()
        a.grid(alpha=0.3)
    fig.suptitle(
        f"golden-reference full path, now / before: p50 x{result['full_path_p50_ratio_median']:.2f}, "
        f"throughput x{result['throughput_ratio_median']:.2f} (bar: full path <= 1.3x)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=20, help="verdicts of each run left out of the figures")
    ap.add_argument("--before-commit", default="e6e0870", help="where the 'before' model and thresholds come from")
    ap.add_argument("--model", type=Path, default=MODEL, help="the 'now' model")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reference")
    args = ap.parse_args()

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ei-bench-ref-") as tmp:
        before = old_model(args.before_commit, Path(tmp) / "before")
        models = {"before": before, "now": args.model}
        for r in range(args.rounds):
            res: dict[str, Any] = {}
            order = ("before", "now") if r % 2 == 0 else ("now", "before")
            for mode, in_flight in (("saturated", 2), ("unsaturated", 1)):
                for which in order if mode == "saturated" else tuple(reversed(order)):
                    state = Path(tmp) / f"r{r}-{mode}-{which}"
                    cfg = make_config(models[which], which == "now", in_flight, state)
                    res[f"{which}_{mode}"] = run(cfg, args.frames, False, args.warmup)
            res["full_path_p50_ratio"] = (
                res["now_unsaturated"]["latency_ms_p50"] / res["before_unsaturated"]["latency_ms_p50"]
            )
            res["full_path_p99_ratio"] = (
                res["now_unsaturated"]["latency_ms_p99"] / res["before_unsaturated"]["latency_ms_p99"]
            )
            res["throughput_ratio"] = res["now_saturated"]["fps"] / res["before_saturated"]["fps"]
            rounds.append(res)
            print(
                f"round {r + 1}: full path p50 before {res['before_unsaturated']['latency_ms_p50']:.1f} / "
                f"now {res['now_unsaturated']['latency_ms_p50']:.1f} ms (x{res['full_path_p50_ratio']:.3f}); "
                f"p99 {res['before_unsaturated']['latency_ms_p99']:.1f} / "
                f"{res['now_unsaturated']['latency_ms_p99']:.1f} ms; "
                f"throughput {res['before_saturated']['fps']:.1f} / {res['now_saturated']['fps']:.1f} fps "
                f"(x{res['throughput_ratio']:.3f}); verdicts before {res['before_unsaturated']['verdicts']}, "
                f"now {res['now_unsaturated']['verdicts']}",
                flush=True,
            )
    result = {
        "benchmark": "reference_path",
        "host": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "before": {"commit": args.before_commit, "reference_align": 0, "difference_evidence": False},
        "now": {"model": str(args.model), "reference_align": 8, "difference_evidence": True},
        "frames_per_run": args.frames,
        "warmup_verdicts_left_out": args.warmup,
        "rounds": rounds,
        "full_path_p50_ratio_median": round(statistics.median(r["full_path_p50_ratio"] for r in rounds), 4),
        "full_path_p99_ratio_median": round(statistics.median(r["full_path_p99_ratio"] for r in rounds), 4),
        "throughput_ratio_median": round(statistics.median(r["throughput_ratio"] for r in rounds), 4),
        "bar": "full path (capture to verdict, p50) now <= 1.3x before",
    }
    result["met"] = result["full_path_p50_ratio_median"] <= 1.3
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "path.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "path.png")
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("full_path_p50_ratio_median", "full_path_p99_ratio_median", "throughput_ratio_median", "met")
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
