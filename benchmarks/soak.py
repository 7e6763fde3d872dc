"""Soak benchmark (opt-in): the real service for an hour at line rate, watched from outside.

Runs `edge-inspect run` as its own process on a replay line (the bundled PCB boards, looped) or
the GenTL simulator, with the shipped model, a JSONL and a log sink and the audit trail, as a
station would. Every `--sample-s` it samples the service process from /proc: resident memory
(RSS), open file descriptors, threads; and from the verdicts it wrote since the last sample:
capture-to-verdict latency percentiles, verdict counts, FAILSAFE count; and the host's 1-minute
load average (latency on a shared host follows it). At the end the service
gets SIGTERM (ordered drain) and its summary is kept.

Judged after the warm-up (`--warmup-s`, default min(300 s, 20 % of the run)):
- RSS growth per hour: least-squares slope of RSS over the samples after warm-up, in MB/h;
  target <= 5 MB/h (`--rss-target-mb-h`).
- p99 drift: the mean of the windows' p99 in the last third after warm-up over the first third
  (ratio; target <= 1.25) and the least-squares slope of the windows' p99 (ms/h).
- fd and thread growth: counts at the end against the first sample after warm-up (must not grow).

A short run extrapolates a slope from few samples: read it as such (the JSON says how long it
ran). Writes JSON + PNG to benchmarks/results/ (soak.json, soak.png unless `--out`).

    nice -n 10 .venv/bin/python benchmarks/soak.py [--minutes 60] [--rate-ppm 600] [--source replay|gentl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"
IMAGES = REPO / "edge" / "demo_data" / "images"
RESULTS = REPO / "benchmarks" / "results"


def station_config(work: Path, source: str, rate_ppm: float, budget_ms: float) -> dict[str, Any]:
    if source == "replay":
        camera: dict[str, Any] = {"type": "replay", "name": "soak", "path": str(IMAGES), "rate_ppm": rate_ppm}
    else:  # the GenTL simulator bundled with the genicam wheel, at the line rate
        camera = {"type": "genicam", "name": "soak", "frame_rate": rate_ppm / 60.0, "num_buffers": 16}
    return {
        "version": "soak",
        "cameras": [camera],
        "engine": {"type": "onnxruntime", "model": str(MODEL)},
        "pipeline": {"budget_ms": budget_ms, "ring_slots": 8},
        "sinks": [{"type": "jsonl", "path": str(work / "verdicts.jsonl")}, {"type": "log"}],
        "metrics": {"port": 0},
        "state_dir": str(work / "state"),
    }


def proc_status(pid: int) -> dict[str, float]:
    """RSS (MB), threads and open fds of a live process, from /proc."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


class VerdictTail:
    """Reads the whole lines the service appended to its JSONL file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()  # not yet a whole line
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def window_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    lat = np.array([r.get("latency_ms", {}).get("total", np.nan) for r in records], np.float64)
    lat = lat[np.isfinite(lat)]
    kinds = [r.get("verdict") for r in records]
    return {
        "verdicts": len(records),
        "failsafe": kinds.count("FAILSAFE"),
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        "max_ms": round(float(lat.max()), 3) if lat.size else None,
    }


def slope_per_hour(t_s: np.ndarray, y: np.ndarray) -> float | None:
    if t_s.size < 3 or float(np.ptp(t_s)) <= 0:
        return None
    return float(np.polyfit(t_s, y, 1)[0] * 3600.0)


def analyse(samples: list[dict[str, Any]], warmup_s: float, args: argparse.Namespace) -> dict[str, Any]:
    after = [s for s in samples if s["t_s"] >= warmup_s]
    res: dict[str, Any] = {"samples_after_warmup": len(after)}
    if len(after) < 3:
        res["verdict"] = "too short to judge (fewer than 3 samples after warm-up)"
        return res
    t = np.array([s["t_s"] for s in after])
    rss = np.array([s["rss_mb"] for s in after])
    res["rss_mb_first"] = round(float(rss[0]), 1)
    res["rss_mb_last"] = round(float(rss[-1]), 1)
    res["rss_mb_max"] = round(float(rss.max()), 1)
    res["rss_growth_mb_per_h"] = round(slope_per_hour(t, rss) or 0.0, 2)
    res["fds_first"], res["fds_last"] = after[0]["fds"], after[-1]["fds"]
    res["threads_first"], res["threads_last"] = after[0]["threads"], after[-1]["threads"]
    p99 = [(s["t_s"], s["p99_ms"]) for s in after if s.get("p99_ms") is not None]
    if len(p99) >= 3:
        tp = np.array([a for a, _ in p99])
        yp = np.array([b for _, b in p99])
        third = max(1, len(yp) // 3)
        first, last = float(yp[:third].mean()), float(yp[-third:].mean())
        res["p99_first_third_ms"] = round(first, 3)
        res["p99_last_third_ms"] = round(last, 3)
        res["p99_drift_ratio"] = round(last / first, 3) if first > 0 else None
        res["p99_slope_ms_per_h"] = round(slope_per_hour(tp, yp) or 0.0, 2)
    checks = {
        "rss_growth": res["rss_growth_mb_per_h"] <= args.rss_target_mb_h,
        "fds_flat": res["fds_last"] <= res["fds_first"] + 2,
        "threads_flat": res["threads_last"] <= res["threads_first"] + 1,
    }
    if res.get("p99_drift_ratio") is not None:
        checks["p99_no_drift"] = res["p99_drift_ratio"] <= args.p99_drift_target
    res["checks"] = checks
    res["verdict"] = "pass" if all(checks.values()) else "FAIL: " + ", ".join(k for k, ok in checks.items() if not ok)
    return res


def plot(samples: list[dict[str, Any]], warmup_s: float, result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s["t_s"] for s in samples]) / 60.0
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(t, [s["rss_mb"] for s in samples], label="RSS")
    axes[0].set_ylabel("RSS (MB)")
    growth = result.get("analysis", {}).get("rss_growth_mb_per_h")
    axes[0].set_title(f"edge-inspect soak: {result['minutes_run']:.1f} min, RSS growth {growth} MB/h after warm-up")
    axes[1].plot(t, [s["fds"] for s in samples], label="open fds")
    axes[1].plot(t, [s["threads"] for s in samples], label="threads")
    axes[1].set_ylabel("count")
    axes[1].legend()
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        axes[2].plot(t, [s.get(key) if s.get(key) is not None else np.nan for s in samples], label=label)
    axes[2].set_ylabel("capture-to-verdict (ms)")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    for ax in axes:
        ax.axvline(warmup_s / 60.0, color="grey", linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long to run the service (default 60)")
    ap.add_argument("--rate-ppm", type=float, default=600.0, help="line rate, parts per minute")
    ap.add_argument("--source", choices=["replay", "gentl"], default="replay")
    ap.add_argument("--budget-ms", type=float, default=1000.0, help="capture-to-verdict budget")
    ap.add_argument("--sample-s", type=float, default=15.0, help="sampling interval")
    ap.add_argument("--warmup-s", type=float, default=None, help="default: min(300, 20%% of the run)")
    ap.add_argument("--rss-target-mb-h", type=float, default=5.0)
    ap.add_argument("--p99-drift-target", type=float, default=1.25)
    ap.add_argument("--out", type=Path, default=RESULTS / "soak", help="output prefix (.json and .png added)")
    args = ap.parse_args(argv)
    duration_s = args.minutes * 60.0
    warmup_s = args.warmup_s if args.warmup_s is not None else min(300.0, 0.2 * duration_s)
    work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    cfg_path = work / "station.yaml"
    cfg_path.write_text(yaml.safe_dump(station_config(work, args.source, args.rate_ppm, args.budget_ms)))
    summary_path = work / "summary.json"
    cmd = [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg_path), "--no-status"]
    cmd += ["--summary-json", str(summary_path)]
    log_path = work / "service.log"

    def interrupted(signum: int, _frame: Any) -> None:  # stop early: the service still drains, results written
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    print(f"soak: {args.minutes:g} min at {args.rate_ppm:g} ppm ({args.source}); work dir {work}", flush=True)
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log_fh, stderr=subprocess.STDOUT)
        tail = VerdictTail(work / "verdicts.jsonl")
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        next_at = t0 + args.sample_s
        try:
            while time.monotonic() - t0 < duration_s and proc.poll() is None:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += args.sample_s
                if proc.poll() is not None:
                    break
                sample = {"t_s": round(time.monotonic() - t0, 1), **proc_status(proc.pid)}
                sample["load1"] = round(os.getloadavg()[0], 2)  # the host's contention, to read latency by
                sample.update(window_stats(tail.read()))
                samples.append(sample)
                print(
                    f"  {sample['t_s']:7.0f} s  RSS {sample['rss_mb']:7.1f} MB  fds {sample['fds']:3d}  "
                    f"threads {sample['threads']:3d}  verdicts {sample['verdicts']:5d}  "
                    f"p50 {sample['p50_ms']} ms  p99 {sample['p99_ms']} ms  failsafe {sample['failsafe']}",
                    flush=True,
                )
        except KeyboardInterrupt:
            print("soak: interrupted; stopping the service", flush=True)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    ran_s = time.monotonic() - t0
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    result: dict[str, Any] = {
        "benchmark": "soak",
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "config": {
            "source": args.source,
            "rate_ppm": args.rate_ppm,
            "budget_ms": args.budget_ms,
            "model": str(MODEL.relative_to(REPO)),
            "sample_s": args.sample_s,
            "warmup_s": warmup_s,
        },
        "minutes_asked": args.minutes,
        "minutes_run": round(ran_s / 60.0, 2),
        "exit_code": rc,
        "targets": {"rss_growth_mb_per_h": args.rss_target_mb_h, "p99_drift_ratio": args.p99_drift_target},
        "analysis": analyse(samples, warmup_s, args),
        "service_summary": summary,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out.with_suffix(".json"), args.out.with_suffix(".png")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if samples:
        plot(samples, warmup_s, result, png_path)
    a = result["analysis"]
    print(json.dumps({k: v for k, v in a.items() if k != "checks"}, indent=2))
    print(f"soak: {a.get('verdict')}; wrote {json_path} and {png_path} (service exit {rc})")
    return 0 if rc == 0 and str(a.get("verdict", "")).startswith("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
