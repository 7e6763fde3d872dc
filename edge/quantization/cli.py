"""`edge-inspect quantize`: INT8 OpenVINO IR from an ONNX model with NNCF, and its accuracy change.

`edge.cli.build_parser` calls `add_quantize_command(subparsers)`. nncf and openvino are imported
inside the handler only (the `quantize` extra); without them the command prints one line and
exits with code 2, like every error edge-inspect raises on purpose.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.errors import EdgeInspectError

log = logging.getLogger(__name__)


def add_quantize_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `quantize`."""
    from edge.quantization.quantize import DEFAULT_CALIB_COUNT, DEFAULT_PRESET, PRESETS

    q = subparsers.add_parser(
        "quantize",
        help="INT8 OpenVINO IR from an ONNX model (NNCF post-training quantization; the 'quantize' extra)",
        description=(
            "Quantize an ONNX YOLO model to an INT8 OpenVINO IR with NNCF, calibrating on real images run "
            "through the service's own letterbox; with --data, report mAP50 and part recall / false-reject "
            "rate of FP32 and INT8 on a labelled split (both through the OpenVINO engine), and write the INT8 "
            "model's own part thresholds, calibrated there the way the FP32 model's were."
        ),
    )
    q.add_argument("--model", type=Path, required=True, help="FP32 ONNX model")
    q.add_argument("--calib", type=Path, required=True, help="folder of calibration images (searched recursively)")
    q.add_argument(
        "--calib-count", type=int, default=DEFAULT_CALIB_COUNT, help="images used, spread evenly over the folder"
    )
    q.add_argument("--data", type=Path, default=None, help="labelled data.yaml (or folder): compare FP32 and INT8")
    q.add_argument("--split", default="val", help="split of --data to measure on")
    q.add_argument("--out", type=Path, default=None, help="IR .xml to write (default: <model>-int8.xml beside it)")
    q.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET, help="NNCF quantization preset")
    q.add_argument(
        "--head-outputs-fp32",
        action="store_true",
        help="keep the last 1x1 convolution of each Detect-head branch (box distribution, class logits) in "
        "floating point too",
    )
    q.add_argument(
        "--no-thresholds",
        action="store_true",
        help="do not write <out>.thresholds.yaml (the INT8 model's own part thresholds, calibrated on --data "
        "--split with the FP32 sidecar's target recall and floor)",
    )
    q.add_argument(
        "--group-pattern",
        default=None,
        help="regex naming an image's group for the cross-fitted comparison (default: `dataset convert`'s prefix)",
    )
    q.add_argument("--summary-json", type=Path, default=None, help="write the result as JSON here")
    q.add_argument("--threads", type=int, default=None, help="OpenVINO inference threads for the comparison")
    q.add_argument(
        "--conf", type=float, default=0.25, help="part threshold when the FP32 model has no thresholds sidecar"
    )
    q.add_argument(
        "--max-recall-drop",
        type=float,
        default=None,
        metavar="D",
        help="accuracy-controlled quantization (needs --data; minutes): revert quantizers to floating point until "
        "part recall on the defective images of --control-split drops by at most D (e.g. 0)",
    )
    q.add_argument(
        "--control-split", default=None, help="split for --max-recall-drop (default: --split; a held-out one is fairer)"
    )
    q.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    try:
        return _quantize(args)
    except EdgeInspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _quantize(args: argparse.Namespace) -> int:
    from edge.errors import ConfigError
    from edge.quantization.int8_accuracy import compare_accuracy
    from edge.quantization.quantize import RecallControl, quantize_onnx, with_accuracy
    from edge.thresholds import sidecar_path

    control = None
    if args.max_recall_drop is not None:
        if args.data is None:
            raise ConfigError("--max-recall-drop needs --data (a labelled split to measure part recall on)")
        control = RecallControl(
            data=args.data, split=args.control_split or args.split, max_drop=args.max_recall_drop, part_conf=args.conf
        )
    result = quantize_onnx(
        args.model,
        args.calib,
        out=args.out,
        calib_count=args.calib_count,
        preset=args.preset,
        recall_control=control,
        head_outputs_fp32=args.head_outputs_fp32,
    )
    if args.data is not None:
        accuracy = compare_accuracy(
            args.model,
            result.xml,
            args.data,
            args.split,
            threads=args.threads,
            part_conf=args.conf,
            thresholds_out=None if args.no_thresholds else sidecar_path(result.xml),
            group_pattern=args.group_pattern,
        )
        result = with_accuracy(result, accuracy)
    doc: dict[str, Any] = result.summary()
    text = json.dumps(doc, indent=2, default=str)
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(text + "\n")
        log.info("summary written to %s", args.summary_json)
    print(text)
    acc = doc.get("accuracy")
    if acc is not None:
        f, i = acc["fp32"], acc["int8"]
        print(
            f"FP32 mAP50 {f['mAP50']:.4f} part recall {f['part_recall']:.4f} FRR {f['false_reject_rate']:.4f} | "
            f"INT8 mAP50 {i['mAP50']:.4f} part recall {i['part_recall']:.4f} FRR {i['false_reject_rate']:.4f}",
            file=sys.stderr,
        )
        own = acc.get("own_thresholds")
        if own:
            crossed = own.get("cross_fitted") or {}
            print(
                "own thresholds: in sample FP32 / INT8 part recall "
                f"{own['in_sample']['fp32']['part_recall']:.4f} / {own['in_sample']['int8']['part_recall']:.4f}"
                + (
                    f", cross-fitted {crossed['fp32']['part_recall']:.4f} / {crossed['int8']['part_recall']:.4f} "
                    f"(FRR {crossed['fp32']['false_reject_rate']:.4f} / {crossed['int8']['false_reject_rate']:.4f})"
                    if crossed
                    else ""
                ),
                file=sys.stderr,
            )
        # the verdict that matters is the one for the thresholds the INT8 model will run with
        deployed = own if own and own.get("sidecar") else acc
        if not deployed["part_recall_unchanged"]:
            which = "its own thresholds" if deployed is own else "the FP32 model's thresholds"
            print(f"warning: INT8 part recall with {which} is lower than FP32's", file=sys.stderr)
            return 1
    return 0
