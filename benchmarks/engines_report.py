"""The engines benchmark's figures: per-engine percentiles, ratios (overall and round by round),
targets, the printed report and the chart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from engines_common import Bench
from engines_ours import NO_AMX

log = logging.getLogger("bench.engines")


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


def ratios_of(engines: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each of our engines' full-path p50 against Ultralytics on the same runtime and on PyTorch,
    over all frames and round by round."""
    full50: dict[str, float | None] = {name: ent["full_ms"]["p50"] for name, ent in engines.items()}
    rounds = {name: ent["round_full_p50_ms"] for name, ent in engines.items()}
    ratios: dict[str, dict[str, Any]] = {}
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
    return ratios


def recall_unchanged(acc: dict[str, Any] | None, int8_has_sidecar: bool) -> bool | None:
    """With the thresholds the IR is deployed with: its own sidecar's (as `quantize` writes it:
    calibrated like the FP32 model's; judged in sample and cross-fitted), else the FP32 model's."""
    if acc is None or "error" in acc:
        return None
    own = acc.get("own_thresholds")
    if int8_has_sidecar and own:
        return bool(own["part_recall_unchanged"])
    return bool(acc["part_recall_unchanged"])


def targets_of(
    engines: dict[str, dict[str, Any]],
    ratios: dict[str, dict[str, Any]],
    int8_rows: dict[str, dict[str, Any] | None],
    int8_has_sidecar: bool,
) -> list[dict[str, Any]]:
    """The targets (issue #4), each met, not met or n/a."""
    ov = engines.get("openvino")
    return [
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
                extra=recall_unchanged(acc, int8_has_sidecar),
            )
            for n, acc in int8_rows.items()
            if n in engines
        ),
    ]
