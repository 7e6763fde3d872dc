"""Write the demo's line set for the golden-reference model: real defective boards and good parts
that look like a second capture of a good board, so the demo's recall and false-reject rate mean
what a newcomer thinks they mean.

For each board of `edge/demo_data/references` (30 boards of DeepPCB's validation groups):
- `line/<board>_test.jpg`: the board under test as DeepPCB captured it (its defects labelled in
  `labels/<board>_test.txt`), a copy of `images/<board>_test.jpg`;
- `line/<board>_good.jpg`: the same capture with its labelled defects repaired seamlessly from
  the template (`edge.training.drift.feathered_repair`: only the differing pixels, feathered; the
  capture's own noise kept), then captured again with a line's drift: shifted by a whole-pixel
  offset up to +-2 px on each axis (edge repeated), a gain in [0.92, 1.08] and Gaussian noise of
  sigma 3 (seeded), stored as JPEG like DeepPCB's own captures; its label file is empty.

A template replayed against itself has no difference at all (a good part nobody fails); these
good parts are not the references, so the model has to tell drift from defects, and the demo
turns on `reference_align` for them (edge/demo.py).

    .venv/bin/python scripts/make_demo_captures.py --deeppcb ../shared/datasets/deeppcb [--seed 17]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.training.dataset import parse_deeppcb_annotation
from edge.training.drift import degrade, feathered_repair, shift_image

DEMO = Path(__file__).resolve().parents[1] / "edge" / "demo_data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deeppcb", type=Path, required=True, help="DeepPCB folder (list.txt, images/, annotations/)")
    ap.add_argument("--demo", type=Path, default=DEMO)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--max-shift", type=int, default=2)
    ap.add_argument("--gain", type=float, default=0.08)
    ap.add_argument("--noise", type=float, default=3.0)
    ap.add_argument("--quality", type=int, default=85, help="JPEG quality of the good captures")
    args = ap.parse_args()

    line = args.demo / "line"
    if line.exists():
        shutil.rmtree(line)
    line.mkdir()
    boards = sorted(p.stem for p in (args.demo / "references").glob("*.jpg"))
    for i, board in enumerate(boards):
        group, n = board.split("_", 1)
        gid = group.removeprefix("group")
        test_path = args.deeppcb / "images" / group / gid / f"{n}_test.jpg"
        temp_path = args.deeppcb / "images" / group / gid / f"{n}_temp.jpg"
        boxes = parse_deeppcb_annotation(args.deeppcb / "annotations" / group / f"{gid}_not" / f"{n}.txt")
        shutil.copyfile(args.demo / "images" / f"{board}_test.jpg", line / f"{board}_test.jpg")
        part = cv2.imread(str(test_path), cv2.IMREAD_GRAYSCALE)
        ref = cv2.imread(str(temp_path), cv2.IMREAD_GRAYSCALE)
        if part is None or ref is None:
            raise SystemExit(f"cannot read {test_path} or {temp_path}")
        feathered_repair(part, ref, [(b.x1, b.y1, b.x2, b.y2) for b in boxes])
        rng = np.random.default_rng([args.seed, i])
        dx, dy = (int(v) for v in rng.integers(-args.max_shift, args.max_shift + 1, size=2))
        gain = float(rng.uniform(1.0 - args.gain, 1.0 + args.gain))
        good = degrade(shift_image(part, float(dx), float(dy)), gain, args.noise, rng)
        cv2.imwrite(str(line / f"{board}_good.jpg"), good, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
        (args.demo / "labels" / f"{board}_good.txt").write_text("")
        print(f"{board}: good capture shifted ({dx:+d}, {dy:+d}) px, gain {gain:.3f}, noise {args.noise}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
