"""Training-side subcommands for `edge-inspect`: dataset convert, train, eval, calibrate.

`edge.cli` calls `add_commands(subparsers)`; every command sets `func(args) -> int`. Errors that
edge-inspect raises on purpose print one line and exit with code 2. Heavy imports (ultralytics,
torch, onnxruntime, matplotlib) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.errors import EdgeInspectError

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def _guarded(func: Handler) -> Handler:
    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except EdgeInspectError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def _override(text: str) -> tuple[str, Any]:
    """KEY=VALUE -> (key, value) with VALUE read as YAML (0.5 -> float, false -> bool, SGD -> str)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"{key}: cannot read value {value!r}: {e}") from e
    if isinstance(parsed, (dict, list)):
        raise argparse.ArgumentTypeError(f"{key}: give a single value, got {value!r}")
    return key.strip(), parsed


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `dataset`, `train`, `eval` and `calibrate`."""
    ds = subparsers.add_parser("dataset", help="prepare training data")
    ds_sub = ds.add_subparsers(dest="dataset_command", required=True)
    conv = ds_sub.add_parser("convert", help="DeepPCB or Pascal VOC -> YOLO dataset split by group")
    conv.add_argument("src", type=Path, help="source folder (DeepPCB with list.txt, or VOC)")
    conv.add_argument("out", type=Path, help="output folder (replaced if it exists)")
    conv.add_argument("--format", choices=("deeppcb", "voc"), default="deeppcb")
    conv.add_argument("--val-groups", type=_csv, default=None, help="groups held out for validation: g1,g2")
    conv.add_argument("--classes", type=_csv, default=None, help="class names a,b,c (required for VOC)")
    conv.add_argument(
        "--train-good-fraction",
        type=float,
        default=1.0,
        help="share of good parts (backgrounds) kept in the training split",
    )
    conv.add_argument("--no-templates", action="store_true", help="leave DeepPCB templates out")
    conv.add_argument(
        "--reference",
        action="store_true",
        help="golden-reference pairs: each image is the composite (part, template, difference); "
        "good parts are test images with their defects repaired from the template",
    )
    conv.add_argument(
        "--align-px",
        type=int,
        default=0,
        help="with --reference: align each pair (whole pixels, up to N) before composing, as the "
        "service does with reference_align.max_shift_px N",
    )
    conv.set_defaults(func=_guarded(cmd_dataset_convert))

    tr = subparsers.add_parser("train", help="train a YOLO model (needs the 'train' extra); resumes")
    tr.add_argument("--data", type=Path, required=True, help="data.yaml")
    tr.add_argument("--model", default="yolo11n.yaml", help="architecture yaml or checkpoint")
    tr.add_argument("--imgsz", type=int, default=320)
    length = tr.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None)
    length.add_argument("--hours", type=float, default=None, help="train for this long instead")
    tr.add_argument("--batch", type=int, default=16)
    tr.add_argument("--workers", type=int, default=2)
    tr.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: every core)")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--project", type=Path, default=Path("build/runs"))
    tr.add_argument("--name", default="pcb")
    tr.add_argument("--export", type=Path, default=None, metavar="OUT.onnx", help="export best to ONNX")
    tr.add_argument(
        "--set",
        dest="overrides",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other Ultralytics train argument, e.g. --set mosaic=0 --set lr0=0.0002 (repeatable)",
    )
    tr.set_defaults(func=_guarded(cmd_train))

    ev = subparsers.add_parser("eval", help="measure an ONNX model on a dataset split (onnxruntime)")
    _model_data_args(ev)
    ev.add_argument("--summary-json", type=Path, default=None, help="write summary.json here")
    ev.add_argument("--out-dir", type=Path, default=None, help="write summary.json and PNG plots here")
    ev.add_argument(
        "--conf", type=float, default=0.25, help="single part threshold when no thresholds file is in force"
    )
    ev.add_argument(
        "--thresholds", default="auto", help="thresholds sidecar FILE, 'auto' (the model's sidecar if any) or 'none'"
    )
    ev.set_defaults(func=_guarded(cmd_eval))

    cal = subparsers.add_parser("calibrate", help="per-class reject thresholds for a target part recall")
    _model_data_args(cal)
    cal.add_argument("--target-recall", type=float, default=0.995)
    cal.add_argument(
        "--floor", type=float, default=0.25, help="lowest threshold: the engine confidence of the deployment"
    )
    cal.add_argument("--out", type=Path, default=None, help="sidecar path (default: <model>.thresholds.yaml)")
    cal.add_argument(
        "--cross-fit",
        action="store_true",
        help="also estimate out of sample: calibrate without each group of images, score that group",
    )
    cal.add_argument(
        "--group-pattern",
        default=None,
        help="regex whose first group, searched in an image's file name, names its group "
        "(default: the file name up to its first '_', the group prefix `dataset convert` writes)",
    )
    cal.set_defaults(func=_guarded(cmd_calibrate))


def _model_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="ONNX model")
    p.add_argument("--data", type=Path, required=True, help="data.yaml or dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")


def cmd_dataset_convert(args: argparse.Namespace) -> int:
    from edge.training.dataset import convert

    report = convert(
        args.src,
        args.out,
        fmt=args.format,
        val_groups=args.val_groups,
        class_names=args.classes,
        include_templates=not args.no_templates,
        train_good_fraction=args.train_good_fraction,
        reference=args.reference,
        align_px=args.align_px,
    )
    _print_json(report.as_dict())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edge.engines.model import REFERENCE_COMPOSITE
    from edge.training.dataset import dataset_input_kind
    from edge.training.train import TrainOptions, export_onnx, train

    opts = TrainOptions(
        data=args.data,
        model=args.model,
        imgsz=args.imgsz,
        hours=args.hours,
        batch=args.batch,
        workers=args.workers,
        threads=args.threads,
        device=args.device,
        project=args.project,
        name=args.name,
        overrides=dict(args.overrides),
    )
    if args.epochs is not None:
        opts.epochs = args.epochs
    best = train(opts)
    doc: dict[str, Any] = {"checkpoint": str(best)}
    if args.export is not None:
        reference = dataset_input_kind(Path(args.data)) == REFERENCE_COMPOSITE
        doc["onnx"] = str(export_onnx(best, args.export, args.imgsz, reference=reference))
        doc["reference_input"] = reference
    _print_json(doc)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edge.training.evaluate import evaluate

    result = evaluate(
        args.model,
        args.data,
        split=args.split,
        thresholds=args.thresholds,
        part_conf=args.conf,
        out_dir=args.out_dir,
        summary_json=args.summary_json,
        threads=args.threads,
    )
    s = result.summary()
    written = args.summary_json or (args.out_dir / "summary.json" if args.out_dir else None)
    _print_json(
        {
            "model_id": s["model_id"],
            "images": s["images"],
            "mAP50": s["box"]["mAP50"],
            "mAP50-95": s["box"]["mAP50-95"],
            "part": s["part"],
            "speed_ms_per_image": s["speed_ms_per_image"],
            "summary_json": str(written) if written else None,
        }
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge.training.calibrate import calibrate, cross_fit, sidecar_path
    from edge.training.dataset import DEFAULT_GROUP_PATTERN, image_groups
    from edge.training.evaluate import evaluate

    result = evaluate(args.model, args.data, split=args.split, thresholds="none", threads=args.threads)
    cal = calibrate(result.maxconf, result.defective, args.target_recall, floor=args.floor)
    crossed = None
    if args.cross_fit:
        groups = image_groups(result.images, args.group_pattern or DEFAULT_GROUP_PATTERN)
        crossed = cross_fit(result.maxconf, result.defective, groups, args.target_recall, floor=args.floor)
    out = args.out or sidecar_path(args.model)
    result.save_thresholds(out, cal, crossed)
    names = result.names

    def per_class(values: Any) -> dict[str, float]:
        return {n: round(float(t), 6) for n, t in zip(names, values, strict=True)}

    report: dict[str, Any] = {
        "sidecar": str(out),
        "reachable": cal.reachable,
        "message": cal.message,
        "thresholds": per_class(cal.thresholds),
        "measured": cal.measured.to_dict(),
        "single_threshold": {"threshold": round(cal.global_threshold, 6), **cal.global_measured.to_dict()},
    }
    if crossed is not None:
        report["cross_fitted"] = {
            "pooled": crossed.pooled.to_dict(),
            "folds": [
                {
                    "held_out": f.group,
                    "reachable_without_it": f.reachable,
                    "thresholds": per_class(f.thresholds),
                    **f.measured.to_dict(),
                }
                for f in crossed.folds
            ],
        }
    _print_json(report)
    if not cal.reachable:
        print(f"warning: {cal.message}", file=sys.stderr)
        return 1
    return 0
