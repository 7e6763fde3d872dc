"""FP32 vs INT8 accuracy on a labelled split, and the INT8 model's own part thresholds.

`compare_accuracy` runs both models through the OpenVINO engine (`edge.training.evaluate`) on
the same images and reports two comparisons:

- with the FP32 model's thresholds (its sidecar, else one `part_conf` for every class) applied
  to both: what happens if the INT8 model is dropped in with the FP32 model's thresholds;
- with each model's own thresholds (`own_thresholds`, when the FP32 model has a sidecar): the
  INT8 model calibrated the same way its FP32 parent was (same target part recall, same floor,
  `edge.training.calibrate`), in sample, and cross-fitted (each group of images scored with
  thresholds calibrated without it) for both models. Quantization moves scores a little, so a
  part that sat just above a threshold can fall just below it; the cross-fitted figures compare
  the two models out of sample without tuning anything on the parts they are scored on.

A sidecar is keyed by its model's file id, so an INT8 IR cannot use its parent's: with
`thresholds_out` the INT8 model's own thresholds are written there (`<ir>.thresholds.yaml`
beside the IR is where the service looks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge.engines.model import read_model_info
from edge.errors import DatasetError

log = logging.getLogger(__name__)


def _metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    box, part = summary["box"], summary["part"]
    return {
        "model": summary["model"],
        "model_id": summary["model_id"],
        "runtime": summary["runtime"],
        "mAP50": box["mAP50"],
        "mAP50-95": box["mAP50-95"],
        "part_recall": part["part_recall"],
        "false_reject_rate": part["false_reject_rate"],
        "parts": {k: part[k] for k in ("parts", "defective_parts", "good_parts", "tp", "fn", "fp", "tn") if k in part},
        "ms_per_image": summary["speed_ms_per_image"],
    }


def _rates(m: Any) -> dict[str, Any]:
    """Part recall and false-reject rate of a PartMetrics, with the counts behind them."""
    return {
        "part_recall": round(m.part_recall, 6),
        "false_reject_rate": round(m.false_reject_rate, 6),
        "missed": m.fn,
        "false_rejects": m.fp,
        "defective_parts": m.defective_parts,
        "good_parts": m.good_parts,
    }


def compare_accuracy(
    fp32_model: Path,
    int8_model: Path,
    data: Path,
    split: str = "val",
    *,
    threads: int | None = None,
    part_conf: float = 0.25,
    thresholds_out: Path | None = None,
    group_pattern: str | None = None,
) -> dict[str, Any]:
    """FP32 vs INT8 on a labelled split, both through the OpenVINO engine (a like-for-like runtime).

    `part_recall_unchanged` compares the two with the FP32 model's thresholds; `own_thresholds`
    (present when the FP32 model has a thresholds sidecar) with each model's own, in sample and
    cross-fitted over the image groups `group_pattern` names (default: `dataset convert`'s prefix).
    `thresholds_out` writes the INT8 model's own thresholds there (needs the FP32 sidecar).
    """
    from edge.thresholds import auto_sidecar
    from edge.training.evaluate import evaluate

    names = read_model_info(Path(fp32_model)).names
    found = auto_sidecar(Path(fp32_model))
    thr = found[0].vector(names) if found else np.full(len(names), part_conf)
    source = str(found[1]) if found else f"single threshold {part_conf}"
    thresholds = {n: float(t) for n, t in zip(names, thr, strict=True)}
    results = {
        key: evaluate(Path(path), Path(data), split, thresholds=thresholds, threads=threads, runtime="openvino")
        for key, path in (("fp32", fp32_model), ("int8", int8_model))
    }
    fp32, int8 = (_metrics(results[k].summary()) for k in ("fp32", "int8"))
    delta = {
        k: round(float(int8[k]) - float(fp32[k]), 6) for k in ("mAP50", "mAP50-95", "part_recall", "false_reject_rate")
    }
    doc: dict[str, Any] = {
        "data": str(data),
        "split": split,
        "thresholds": {k: round(v, 6) for k, v in thresholds.items()},
        "thresholds_source": source,
        "fp32": fp32,
        "int8": int8,
        "delta": delta,
        "part_recall_unchanged": int8["part_recall"] >= fp32["part_recall"],
    }
    if found is None:
        doc["own_thresholds"] = None
        if thresholds_out is not None:
            log.warning("no INT8 thresholds written: the FP32 model %s has no thresholds sidecar to mirror", fp32_model)
        return doc
    parent = found[0]
    try:
        doc["own_thresholds"] = own_thresholds(
            results["fp32"], results["int8"], parent, group_pattern=group_pattern, out=thresholds_out
        )
    except DatasetError as exc:  # e.g. no defective part in the split: nothing to calibrate on
        log.warning("the INT8 model's own thresholds were not calibrated (none written): %s", exc)
        doc["own_thresholds"] = None
        doc["own_thresholds_error"] = str(exc)
    return doc


def own_thresholds(
    fp32: Any,
    int8: Any,
    parent: Any,
    *,
    group_pattern: str | None,
    out: Path | None,
) -> dict[str, Any]:
    """The INT8 model calibrated like its parent (`parent`: the FP32 sidecar) on the same parts.

    `fp32` and `int8` are `EvalResult`s of the same images; returns the report and writes the
    INT8 sidecar to `out` when given.
    """
    from edge.training.calibrate import DEFAULT_FLOOR, calibrate, cross_fit
    from edge.training.dataset import DEFAULT_GROUP_PATTERN, image_groups

    if list(fp32.images) != list(int8.images):
        raise DatasetError("the FP32 and INT8 evaluations did not score the same images in the same order")
    target = float(parent.target_part_recall)
    floor = float(parent.floor) if parent.floor is not None else DEFAULT_FLOOR
    defective = np.asarray(fp32.defective, bool)
    cal = calibrate(int8.maxconf, defective, target, floor=floor)
    fp32_in = fp32.part  # evaluated with the parent's thresholds, which lie at or above its floor
    report: dict[str, Any] = {
        "target_part_recall": target,
        "floor": floor,
        "thresholds": {n: round(float(t), 6) for n, t in zip(int8.names, cal.thresholds, strict=True)},
        "reachable": cal.reachable,
        "in_sample": {"fp32": _rates(fp32_in), "int8": _rates(cal.measured)},
    }
    crossed: dict[str, Any] = {}
    try:
        groups = image_groups(fp32.images, group_pattern or DEFAULT_GROUP_PATTERN)
        crossed = {
            k: cross_fit(r.maxconf, defective, groups, target, floor=floor) for k, r in (("fp32", fp32), ("int8", int8))
        }
        report["cross_fitted"] = {k: _rates(c.pooled) for k, c in crossed.items()}
        report["groups"] = sorted(set(groups))
    except DatasetError as exc:
        report["cross_fitted"] = None
        report["cross_fit_error"] = str(exc)
    unchanged = cal.reachable and cal.measured.part_recall >= fp32_in.part_recall
    if crossed:
        unchanged = unchanged and crossed["int8"].pooled.part_recall >= crossed["fp32"].pooled.part_recall
    report["part_recall_unchanged"] = bool(unchanged)
    if out is not None:
        int8.save_thresholds(out, cal, crossed.get("int8"))
        report["sidecar"] = str(out)
        log.info("INT8 thresholds written to %s", out)
    return report
