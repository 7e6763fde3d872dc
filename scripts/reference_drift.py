"""A golden-reference model under a line's capture drift, with and without the difference-evidence rule.

Every part of a `dataset convert --reference` split (its composites: part, reference) is
captured again as a line might: shifted by a random whole-pixel offset up to --max-shift px on
each axis (edge repeated), a brightness gain drawn from [1 - --gain, 1 + --gain], Gaussian
sensor noise of sigma --noise (seeded, one draw per image); `--drift none` keeps the pairs as
they are. Then the service's own steps: `reference_align` (--align-px), `compose`, the
letterbox, the engine (ONNX Runtime, or OpenVINO for an INT8 IR), the decoder, and `decide` with the model's thresholds
sidecar and `decision.difference_evidence` (edge.reference.DifferenceEvidence) at each
--min-pixels (0: the rule off).

Printed and saved (--out JSON) for each min_pixels:
- shipped: part recall / false-reject rate with the shipped sidecar thresholds;
- cross-fitted: each group scored with thresholds calibrated (as `calibrate --cross-fit`,
  target --target-recall, floor --floor) on the other groups, pooled; the evidence rule is
  applied before calibrating, as the service applies it before its thresholds.
And once, over all --min-pixels (`selected`): min_pixels chosen out of sample as well (nested
cross-fitting): for each held-out group, every min_pixels is cross-fitted on the other groups
alone (leave one of them out in turn); the one with the lowest false-reject rate there among
those reaching the target recall (ties: the smaller) is calibrated on those groups and scores
the held-out one. Neither the thresholds nor min_pixels then saw the boards they are scored on.
Per-defect recall as well, where the split has YOLO labels (images/<split> -> labels/<split>): the
share of labelled defects a detection of their class finds (IoU >= 0.3, confidence >= the shipped
threshold, evidence >= min_pixels). DeepPCB boards carry several defects each, so part recall hides
a rule that drops small ones; a part on a real line may have one. Only min_pixels whose defect
recall is within --max-defect-recall-drop of the smallest one's are candidates for the choice.

    .venv/bin/python scripts/reference_drift.py --model models/pcb-ref-yolo11n-320.onnx \\
        --images build/datasets/ref-t25/images/val --align-px 8 --drift line --out drift.json

A part is defective when its file stem ends in `_test` (good parts end in `_good`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.decision import DecisionConfig, DifferenceEvidenceConfig, compile_rules, decide
from edge.engines.letterbox import Preprocessor
from edge.engines.yolo import Decoder
from edge.reference import DifferenceEvidence, ReferenceAligner, compose
from edge.thresholds import load_thresholds, sidecar_path
from edge.training.calibrate import calibrate, cross_fit
from edge.training.dataset import image_groups
from edge.training.evaluate import open_eval_engine, read_labels
from edge.training.partmetrics import box_iou, max_confidence_matrix, part_metrics
from edge.verdict import Detections, VerdictKind


def line_capture(part: np.ndarray, rng: np.random.Generator, max_shift: int, gain: float, noise: float) -> np.ndarray:
    """The part as a drifting line captures it: whole-pixel shift, gain, Gaussian noise (new array)."""
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    g = float(rng.uniform(1.0 - gain, 1.0 + gain))
    m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    moved = cv2.warpAffine(part, m, part.shape[1::-1], flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    out = moved.astype(np.float32) * g
    if noise > 0:
        out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def choose_min_pixels(
    maxconfs: dict[int, np.ndarray], defective: np.ndarray, groups: list[str], target: float, floor: float
) -> int:
    """The min_pixels with the lowest cross-fitted false-reject rate among those reaching the
    target recall (ties: the smaller); the smallest where none does."""
    scored = []
    for k, m in sorted(maxconfs.items()):
        cf = cross_fit(m, defective, groups, target, floor)
        if cf.pooled.part_recall >= target:
            scored.append((cf.pooled.false_reject_rate, k))
    return min(scored)[1] if scored else min(maxconfs)


def write_sidecar(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Record the chosen min_pixels in the model's thresholds sidecar (the rest kept as it is)."""
    path = sidecar_path(args.model)
    doc = yaml.safe_load(path.read_text())
    sel = result["selected"]
    k = int(sel["on_all_groups"])
    doc["difference_evidence"] = {
        "min_pixels": k,
        "chosen_by": (
            f"scripts/reference_drift.py --drift {args.drift} --align-px {args.align_px} on {args.images}: "
            f"the lowest cross-fitted false-reject rate at part recall >= {args.target_recall} among "
            f"min_pixels {sel['candidates']} (those of {sorted(int(m) for m in args.min_pixels)} losing at most "
            f"{args.max_defect_recall_drop} of per-defect recall)"
        ),
        "cross_fitted": {
            "part_recall": result[str(k)]["cross_fitted"]["part_recall"],
            "false_reject_rate": result[str(k)]["cross_fitted"]["false_reject_rate"],
        },
        "nested_cross_fitted": {"part_recall": sel["part_recall"], "false_reject_rate": sel["false_reject_rate"]},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    print(f"wrote difference_evidence.min_pixels {k} into {path}")


def select_min_pixels(
    maxconfs: dict[int, np.ndarray], defective: np.ndarray, groups: list[str], target: float, floor: float
) -> dict[str, Any]:
    """Nested cross-fitting: min_pixels and thresholds both chosen without the held-out group."""
    g = np.asarray(groups, dtype=object)
    tp = fp = n_def = n_good = 0
    chosen: dict[str, int] = {}
    by_group: dict[str, list[float]] = {}
    for name in sorted(set(groups)):
        held = g == name
        others = {k: m[~held] for k, m in maxconfs.items()}
        k = choose_min_pixels(others, defective[~held], list(g[~held]), target, floor)
        cal = calibrate(maxconfs[k][~held], defective[~held], target, floor)
        got = part_metrics(maxconfs[k][held], defective[held], cal.thresholds)
        chosen[name] = k
        by_group[name] = [k, got.part_recall, got.false_reject_rate]
        tp, fp = tp + got.tp, fp + got.fp
        n_def, n_good = n_def + got.defective_parts, n_good + got.good_parts
    return {
        "part_recall": tp / max(1, n_def),
        "false_reject_rate": fp / max(1, n_good),
        "chosen": chosen,
        "by_group": by_group,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder of reference composites (PNG)")
    ap.add_argument("--drift", choices=("none", "line"), default="line")
    ap.add_argument("--max-shift", type=int, default=2)
    ap.add_argument("--gain", type=float, default=0.08, help="gain drawn from [1-g, 1+g]")
    ap.add_argument("--noise", type=float, default=3.0, help="Gaussian noise sigma (grey levels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--align-px", type=int, default=8, help="reference_align.max_shift_px (0: off)")
    ap.add_argument("--min-pixels", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    ap.add_argument("--tolerance-px", type=int, default=DifferenceEvidenceConfig().tolerance_px)
    ap.add_argument("--level", type=int, default=DifferenceEvidenceConfig().level)
    ap.add_argument("--margin-px", type=int, default=DifferenceEvidenceConfig().margin_px)
    ap.add_argument("--target-recall", type=float, default=0.995)
    ap.add_argument("--floor", type=float, default=0.05, help="calibration floor (and the decoder's confidence)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--runtime",
        choices=("auto", "onnxruntime", "openvino"),
        default="auto",
        help="auto: OpenVINO for an .xml IR (an INT8 model from `quantize`, with its own sidecar), else ONNX Runtime",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--max-defect-recall-drop",
        type=float,
        default=0.005,
        help="min_pixels losing more per-defect recall than this against the smallest one are not chosen",
    )
    ap.add_argument(
        "--write-sidecar",
        action="store_true",
        help="write the min_pixels the procedure chooses on all groups into the model's thresholds sidecar "
        "(difference_evidence.min_pixels, with how it was chosen and the nested cross-fitted figure); "
        "the service uses it where the config sets no min_pixels",
    )
    args = ap.parse_args()

    engine, info, runtime = open_eval_engine(args.model, threads=args.threads, runtime=args.runtime)
    nc = len(info.names)
    pre = Preprocessor(engine.input_buffer()[0])
    shipped = load_thresholds(sidecar_path(args.model), args.model)
    decode = Decoder(info, conf=min(args.floor, min(shipped.thresholds.values())), iou=0.7)
    aligner = ReferenceAligner(args.align_px) if args.align_px > 0 else None
    scorer = DifferenceEvidence(args.tolerance_px, args.level, args.margin_px)
    paths = sorted(args.images.glob("*.png"))
    groups = image_groups(paths)
    defective = np.array([p.stem.endswith("_test") for p in paths])
    rules = {
        k: compile_rules(
            DecisionConfig(
                thresholds_file=str(sidecar_path(args.model)),
                difference_evidence=DifferenceEvidenceConfig(
                    enabled=k > 0,
                    min_pixels=max(k, 1),
                    tolerance_px=args.tolerance_px,
                    level=args.level,
                    margin_px=args.margin_px,
                ),
            ),
            info.names,
            args.model,
        )
        for k in args.min_pixels
    }
    rejected = {k: np.zeros(len(paths), bool) for k in args.min_pixels}
    per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # classes, scores, evidence
    labels_dir = args.images.parent.parent / "labels" / args.images.name
    ship_thr = shipped.vector(info.names)
    found: dict[int, list[bool]] = {k: [] for k in args.min_pixels}
    t0 = time.monotonic()
    for i, path in enumerate(paths):
        im = cv2.imread(str(path))
        if im is None:
            raise SystemExit(f"cannot read {path}")
        part = np.ascontiguousarray(im[..., 0])
        ref = np.ascontiguousarray(im[..., 1])
        if args.drift == "line":
            rng = np.random.default_rng([args.seed, i])
            part = line_capture(part, rng, args.max_shift, args.gain, args.noise)
        if aligner is not None:
            ref = aligner.align(part, ref)
        geometry = pre(compose(part, ref))  # before infer(): the input buffer is filled here
        dets: Detections = decode(engine.infer(), geometry)
        ev = scorer.count(part, ref, dets.boxes) if len(dets) else np.zeros(0, np.int64)
        per_image.append((dets.classes.astype(np.int64), dets.scores.astype(np.float32), ev))
        label_file = labels_dir / f"{path.stem}.txt"
        if label_file.is_file():
            boxes, classes = read_labels(label_file, part.shape[1], part.shape[0], nc)
            near = box_iou(boxes, dets.boxes) >= 0.3  # (labelled, detected)
            hit = (classes[:, None] == dets.classes[None, :]) & (dets.scores >= ship_thr[dets.classes]) & near
            for k in args.min_pixels:
                found[k].extend(np.any(hit & (ev >= max(k, 0)), axis=1).tolist())

        def evidence(boxes: np.ndarray, p: np.ndarray = part, r: np.ndarray = ref) -> np.ndarray:
            return scorer.count(p, r, boxes)

        for k, rule in rules.items():
            rejected[k][i] = decide(dets, rule, evidence).verdict is VerdictKind.REJECT
    elapsed = time.monotonic() - t0
    result: dict[str, object] = {}
    maxconfs: dict[int, np.ndarray] = {}
    print(
        f"{len(paths)} parts ({int(defective.sum())} defective), drift {args.drift}, "
        f"align {args.align_px}, {runtime}, {elapsed:.0f} s"
    )
    for k in args.min_pixels:
        r = rejected[k]
        tp, fp = int((r & defective).sum()), int((r & ~defective).sum())
        ship = {"part_recall": tp / max(1, defective.sum()), "false_reject_rate": fp / max(1, (~defective).sum())}
        kept = [(c[e >= k], s[e >= k]) for c, s, e in per_image]
        maxconf = max_confidence_matrix(kept, nc)
        maxconfs[k] = maxconf
        cf = cross_fit(maxconf, defective, groups, args.target_recall, args.floor)
        ins = calibrate(maxconf, defective, args.target_recall, args.floor)
        doc: dict[str, Any] = {
            "shipped_thresholds": ship,
            "in_sample": {"part_recall": ins.measured.part_recall, "false_reject_rate": ins.measured.false_reject_rate},
            "cross_fitted": {
                "part_recall": cf.pooled.part_recall,
                "false_reject_rate": cf.pooled.false_reject_rate,
                "by_group": {f.group: [f.measured.part_recall, f.measured.false_reject_rate] for f in cf.folds},
            },
        }
        if found[k]:
            doc["defect_recall"] = float(np.mean(found[k]))
        result[str(k)] = doc
        by_group = " / ".join(f"{f.measured.false_reject_rate:.2f}" for f in cf.folds)
        print(
            f"min_pixels {k:3d}: shipped {ship['part_recall']:.3f}/{ship['false_reject_rate']:.3f}  "
            f"in-sample {ins.measured.part_recall:.3f}/{ins.measured.false_reject_rate:.3f}  "
            f"cross-fitted {cf.pooled.part_recall:.3f}/{cf.pooled.false_reject_rate:.3f} ({by_group})"
            + (f"  defect recall {doc['defect_recall']:.4f}" if "defect_recall" in doc else ""),
            flush=True,
        )
    if len(args.min_pixels) > 1:
        eligible = maxconfs
        if all(found[k] for k in args.min_pixels):
            base = float(np.mean(found[min(args.min_pixels)]))
            eligible = {k: m for k, m in maxconfs.items() if np.mean(found[k]) >= base - args.max_defect_recall_drop}
        sel = select_min_pixels(eligible, defective, groups, args.target_recall, args.floor)
        sel["on_all_groups"] = choose_min_pixels(eligible, defective, groups, args.target_recall, args.floor)
        sel["candidates"] = sorted(eligible)
        result["selected"] = sel
        print(
            f"min_pixels chosen out of sample (nested): cross-fitted {sel['part_recall']:.3f}/"
            f"{sel['false_reject_rate']:.3f} (chosen per held-out group: {sel['chosen']}; candidates within "
            f"{args.max_defect_recall_drop} of the smallest's defect recall: {sel['candidates']})",
            flush=True,
        )
    engine.close()
    if args.write_sidecar:
        if "selected" not in result:
            raise SystemExit("--write-sidecar needs more than one --min-pixels to choose from")
        write_sidecar(args, result)
    if args.out is not None:
        out = {
            "model": str(args.model),
            "runtime": runtime,
            "images": str(args.images),
            "drift": args.drift
            if args.drift == "none"
            else {"max_shift": args.max_shift, "gain": args.gain, "noise": args.noise, "seed": args.seed},
            "align_px": args.align_px,
            "evidence": {"tolerance_px": args.tolerance_px, "level": args.level, "margin_px": args.margin_px},
            "target_recall": args.target_recall,
            "floor": args.floor,
            "min_pixels": result,
        }
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
