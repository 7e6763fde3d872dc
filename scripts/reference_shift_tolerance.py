"""How far may a part sit off its golden reference? Part recall and false-reject rate of a
golden-reference model when every part of a `dataset convert --reference` split is shifted by
s px (both axes, edge repeated) against its reference, with and without `reference_align`.

    .venv/bin/python scripts/reference_shift_tolerance.py --model models/pcb-ref-yolo11n-320.onnx \\
        --images build/datasets/ref-t25/images/val [--align-px 8] [--out shift.json]

A part is defective when its file stem ends in `_test` (what `dataset convert` writes; good
parts end in `_good`); the model's thresholds sidecar decides.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.engines.letterbox import Preprocessor
from edge.engines.onnxruntime import OnnxRuntimeEngineConfig
from edge.engines.yolo import Decoder
from edge.reference import ReferenceAligner, compose
from edge.thresholds import load_thresholds, sidecar_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder of reference composites (PNG)")
    ap.add_argument("--shifts", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--align-px", type=int, default=0, help="reference_align.max_shift_px (0: off)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    engine = OnnxRuntimeEngineConfig(model=str(args.model), intra_op_threads=args.threads).build(Path("."))
    info = engine.load()
    pre = Preprocessor(engine.input_buffer()[0])
    th = load_thresholds(sidecar_path(args.model), args.model)
    vec = np.array([th.thresholds[n] for n in info.names])
    decode = Decoder(info, conf=float(vec.min()), iou=0.7)
    aligner = ReferenceAligner(args.align_px) if args.align_px > 0 else None
    images = [(p.stem.endswith("_test"), cv2.imread(str(p))) for p in sorted(args.images.glob("*.png"))]
    result: dict[str, dict[str, float]] = {}
    for s in args.shifts:
        m = np.float32([[1, 0, s], [0, 1, s]])
        counts = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
        for defective, im in images:
            part = cv2.warpAffine(np.ascontiguousarray(im[..., 0]), m, im.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
            ref = np.ascontiguousarray(im[..., 1])
            if aligner is not None:
                ref = aligner.align(part, ref)
            geometry = pre(compose(part, ref))  # before infer(): the input buffer is filled here
            dets = decode(engine.infer(), geometry)
            rejected = bool(np.any(dets.scores >= vec[dets.classes]))
            counts[("tp" if rejected else "fn") if defective else ("fp" if rejected else "tn")] += 1
        recall = counts["tp"] / max(1, counts["tp"] + counts["fn"])
        frr = counts["fp"] / max(1, counts["fp"] + counts["tn"])
        result[str(s)] = {"part_recall": recall, "false_reject_rate": frr, **counts}
        print(f"shift {s} px: part recall {recall:.3f}, false-reject rate {frr:.3f}", flush=True)
    engine.close()
    if args.out is not None:
        doc = {"model": str(args.model), "align_px": args.align_px, "shifts": result}
        args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
