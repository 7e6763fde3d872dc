"""Golden outputs of Ultralytics `predict` on the shipped model, for the torch-free parity test.

Run with a venv that has ultralytics (and torch), whenever the shipped model changes:

    YOLO_OFFLINE=1 .venv-train/bin/python scripts/make_golden.py

    YOLO_OFFLINE=1 .venv-train/bin/python scripts/make_golden.py --reference

It runs `ultralytics.YOLO(models/pcb-yolo11n-320.onnx).predict(img, conf=C, iou=0.7, imgsz=320)`
on a fixed set of frames made from `edge/demo_data/images/` (whole images, non-square crops, a
colour-tinted BGR version, a small crop that is scaled up, an all-white frame) at two confidence
settings, and writes `tests/data/golden/ultralytics-predict.json`: the model's id (first 16 hex
digits of its sha256, as `edge.engines.model.model_id_of`), the versions used, each frame's recipe
and pixel checksum, and per confidence the boxes (xyxy, source pixels), confidences and classes.

`tests/edge/engines/test_engines_parity_golden.py` rebuilds the frames with `make_frame` from this
file and compares our Preprocessor -> engine -> decode path with the stored results. So this
script imports only numpy, cv2, json and the standard library at module level (ultralytics only
inside `predict_all`), and nothing from the edge package: it runs from `.venv-train` as well.

With `--reference` it does the same for the golden-reference model (`models/pcb-ref-yolo11n-320.onnx`,
the demo's default) into `tests/data/golden/ultralytics-predict-ref.json`: its frames are
composites (part, reference, |part - reference| as B, G, R: what `edge.reference.compose` builds
and what the model was trained on) of second captures and boards under test from
`edge/demo_data/line` with their references, whole and cropped; Ultralytics predicts on the
composite as a BGR image, our path composes the same pair and letterboxes the composite.

Frame recipes (all deterministic, integer arithmetic only):
- `source`: an image under edge/demo_data/images (read with cv2.IMREAD_GRAYSCALE), or null with
  `fill` for a constant frame of `shape`; with `reference` (golden-reference recipes) both are
  paths under edge/demo_data, cropped alike and composed;
- `crop`: [y0, y1, x0, x1] applied to the source (null: whole image), then `step` (default 1):
  every step-th row and column (a small frame, scaled up by the letterbox);
- `color`: "gray" (an HxW mono frame: what a mono camera delivers; Ultralytics gets it as
  GRAY2BGR, which is what our Preprocessor does with mono frames), "bgr" (cv2.COLOR_GRAY2BGR),
  or "tint" (channel c = (gray * tint[c]) >> 8, a true colour image whose channels differ, so a
  swapped channel order cannot pass).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"
DEFAULT_OUT = REPO / "tests" / "data" / "golden" / "ultralytics-predict.json"
REFERENCE_MODEL = REPO / "models" / "pcb-ref-yolo11n-320.onnx"
REFERENCE_OUT = REPO / "tests" / "data" / "golden" / "ultralytics-predict-ref.json"
IMAGES_DIR = "edge/demo_data/images"
DEMO_DIR = "edge/demo_data"
CONFIDENCES = (0.25, 0.05)
IOU = 0.7
IMGSZ = 320
FORMAT_VERSION = 1

# The frames: a dozen, fixed. Sources are DeepPCB test images (640x640 grey) bundled with the demo.
RECIPES: list[dict[str, Any]] = [
    {"name": "g44000-062", "source": "group44000_44000062_test.jpg", "crop": None, "color": "gray"},
    {"name": "g50600-002", "source": "group50600_50600002_test.jpg", "crop": None, "color": "gray"},
    {"name": "g77000-000", "source": "group77000_77000000_test.jpg", "crop": None, "color": "gray"},
    {"name": "g44000-068-bgr", "source": "group44000_44000068_test.jpg", "crop": None, "color": "bgr"},
    {
        "name": "g50600-008-tint",
        "source": "group50600_50600008_test.jpg",
        "crop": None,
        "color": "tint",
        "tint": [150, 220, 256],
    },
    {"name": "g77000-006-wide", "source": "group77000_77000006_test.jpg", "crop": [80, 560, 0, 640], "color": "gray"},
    {"name": "g44000-075-tall", "source": "group44000_44000075_test.jpg", "crop": [0, 640, 130, 490], "color": "bgr"},
    {
        "name": "g50600-014-odd-tint",
        "source": "group50600_50600014_test.jpg",
        "crop": [37, 604, 11, 522],
        "color": "tint",
        "tint": [256, 180, 120],
    },
    {
        "name": "g77000-012-small",
        "source": "group77000_77000012_test.jpg",
        "crop": [100, 500, 40, 600],
        "step": 2,
        "color": "gray",
    },
    {"name": "g44000-081-strip", "source": "group44000_44000081_test.jpg", "crop": [300, 451, 0, 640], "color": "bgr"},
    {"name": "g50600-020-temp", "source": "group50600_50600020_temp.jpg", "crop": None, "color": "gray"},
    {"name": "white", "source": None, "fill": 255, "shape": [480, 640, 3], "crop": None, "color": "bgr"},
]


# The golden-reference frames: part (a board under test or a second capture of a good one) and
# its reference, composed. "crop" applies to both before composing.
REFERENCE_RECIPES: list[dict[str, Any]] = [
    {
        "name": "r44000-062-test",
        "source": "line/group44000_44000062_test.jpg",
        "reference": "references/group44000_44000062.jpg",
        "crop": None,
    },
    {
        "name": "r44000-062-good",
        "source": "line/group44000_44000062_good.jpg",
        "reference": "references/group44000_44000062.jpg",
        "crop": None,
    },
    {
        "name": "r50600-002-test",
        "source": "line/group50600_50600002_test.jpg",
        "reference": "references/group50600_50600002.jpg",
        "crop": None,
    },
    {
        "name": "r77000-000-test",
        "source": "line/group77000_77000000_test.jpg",
        "reference": "references/group77000_77000000.jpg",
        "crop": None,
    },
    {
        "name": "r77000-000-good",
        "source": "line/group77000_77000000_good.jpg",
        "reference": "references/group77000_77000000.jpg",
        "crop": None,
    },
    {
        "name": "r44000-068-wide",
        "source": "line/group44000_44000068_test.jpg",
        "reference": "references/group44000_44000068.jpg",
        "crop": [80, 560, 0, 640],
    },
    {
        "name": "r50600-008-tall",
        "source": "line/group50600_50600008_test.jpg",
        "reference": "references/group50600_50600008.jpg",
        "crop": [0, 640, 130, 490],
    },
    {
        "name": "r77000-006-odd",
        "source": "line/group77000_77000006_test.jpg",
        "reference": "references/group77000_77000006.jpg",
        "crop": [37, 604, 11, 522],
    },
    {
        "name": "r44000-075-test",
        "source": "line/group44000_44000075_test.jpg",
        "reference": "references/group44000_44000075.jpg",
        "crop": None,
    },
    {
        "name": "r50600-014-good",
        "source": "line/group50600_50600014_good.jpg",
        "reference": "references/group50600_50600014.jpg",
        "crop": None,
    },
    {
        "name": "r-self",
        "source": "references/group44000_44000081.jpg",
        "reference": "references/group44000_44000081.jpg",
        "crop": None,
    },
]


def read_grey(path: Path, crop: Sequence[int] | None) -> np.ndarray:
    """A golden source image, grey, cropped ([y0, y1, x0, x1]) where the recipe says so."""
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise FileNotFoundError(f"{path}: cannot read the golden source image")
    if crop is not None:
        y0, y1, x0, x1 = (int(v) for v in crop)
        grey = grey[y0:y1, x0:x1]
    return grey


def read_pair(recipe: Mapping[str, Any], repo: Path = REPO) -> tuple[np.ndarray, np.ndarray]:
    """A golden-reference recipe's part and reference, grey, cropped alike."""
    part, ref = (
        np.ascontiguousarray(read_grey(repo / DEMO_DIR / str(recipe[key]), recipe.get("crop")))
        for key in ("source", "reference")
    )
    return part, ref


def make_frame(recipe: Mapping[str, Any], repo: Path = REPO) -> np.ndarray:
    """The uint8 frame a recipe describes: HxW (mono) or HxWx3 (BGR); a golden-reference recipe's
    is its composite (B part, G reference, R |part - reference|)."""
    if recipe.get("reference") is not None:
        part, ref = read_pair(recipe, repo)
        return cv2.merge([part, ref, cv2.absdiff(part, ref)])
    source = recipe.get("source")
    if source is None:
        shape = tuple(int(s) for s in recipe["shape"])
        frame = np.full(shape, int(recipe["fill"]), np.uint8)
        return frame if recipe.get("color") != "gray" or frame.ndim == 2 else np.ascontiguousarray(frame[:, :, 0])
    gray = read_grey(repo / IMAGES_DIR / str(source), recipe.get("crop"))
    step = int(recipe.get("step", 1))
    if step != 1:
        gray = gray[::step, ::step]
    color = recipe.get("color", "gray")
    if color == "gray":
        return np.ascontiguousarray(gray)
    if color == "bgr":
        return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2BGR)
    if color == "tint":
        k = np.asarray(recipe["tint"], np.uint32).reshape(1, 1, 3)
        return ((gray[:, :, None].astype(np.uint32) * k) >> 8).clip(0, 255).astype(np.uint8)
    raise ValueError(f"unknown colour recipe {color!r}")


def pixels_sha256(frame: np.ndarray) -> str:
    """Checksum of a frame's shape and pixels (catches a JPEG decoder that differs)."""
    h = hashlib.sha256(str(frame.shape).encode())
    h.update(np.ascontiguousarray(frame).tobytes())
    return h.hexdigest()[:16]


def model_id_of(path: Path) -> str:
    """First 16 hex digits of the file's sha256 (the same as edge.engines.model.model_id_of)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def conf_key(conf: float) -> str:
    return f"{conf:g}"


# ------------------------------------------------------------------------------- comparison


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 1.0


def compare(
    golden: Mapping[str, Any],
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    conf: float,
    *,
    min_iou: float = 0.99,
    score_tol: float = 1e-3,
) -> list[str]:
    """Differences between golden detections and ours (empty when they agree).

    Every golden detection must have one of ours of the same class with IoU >= `min_iou` and a
    confidence within `score_tol`, and vice versa (one-to-one). The only detections allowed to be
    missing on either side are those whose confidence is within `score_tol` of `conf` (they can
    fall either way of the threshold); apart from those, the counts must be equal.
    """
    g_boxes = [list(map(float, b)) for b in golden["boxes"]]
    g_scores = [float(s) for s in golden["confidences"]]
    g_classes = [int(c) for c in golden["classes"]]
    o_boxes = np.asarray(boxes, np.float64).reshape(-1, 4).tolist()
    o_scores = np.asarray(scores, np.float64).reshape(-1).tolist()
    o_classes = np.asarray(classes, np.int64).reshape(-1).tolist()
    problems: list[str] = []
    used: set[int] = set()
    for i, (gb, gs, gc) in enumerate(zip(g_boxes, g_scores, g_classes, strict=True)):
        best, best_iou = -1, -1.0
        for j, (ob, os_, oc) in enumerate(zip(o_boxes, o_scores, o_classes, strict=True)):
            if j in used or oc != gc or abs(os_ - gs) > score_tol:
                continue
            iou = box_iou(gb, ob)
            if iou > best_iou:
                best, best_iou = j, iou
        if best >= 0 and best_iou >= min_iou:
            used.add(best)
        elif gs - conf > score_tol:
            near = f" (closest same-class IoU {best_iou:.4f})" if best >= 0 else ""
            problems.append(f"golden #{i} class {gc} conf {gs:.5f} box {[round(v, 1) for v in gb]} not found{near}")
    for j, (ob, os_, oc) in enumerate(zip(o_boxes, o_scores, o_classes, strict=True)):
        if j not in used and os_ - conf > score_tol:
            problems.append(f"extra #{j} class {oc} conf {os_:.5f} box {[round(v, 1) for v in ob]} not in golden")
    return problems


# ------------------------------------------------------------------------------- generation


def predict_all(model: Path, recipes: Sequence[Mapping[str, Any]], repo: Path = REPO) -> dict[str, Any]:
    """Run Ultralytics predict on every recipe at every confidence; the golden document."""
    import ultralytics
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    images = []
    for recipe in recipes:
        frame = make_frame(recipe, repo)
        bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame
        results: dict[str, Any] = {}
        for conf in CONFIDENCES:
            r = yolo.predict(bgr, conf=conf, iou=IOU, imgsz=IMGSZ, verbose=False)[0]
            b = r.boxes
            results[conf_key(conf)] = {
                "boxes": [[round(float(v), 4) for v in row] for row in b.xyxy.cpu().numpy().reshape(-1, 4)],
                "confidences": [round(float(v), 6) for v in b.conf.cpu().numpy().reshape(-1)],
                "classes": [int(v) for v in b.cls.cpu().numpy().reshape(-1)],
            }
        images.append(
            {
                "name": recipe["name"],
                "recipe": dict(recipe),
                "shape": list(frame.shape),
                "pixels_sha256": pixels_sha256(frame),
                "results": results,
            }
        )
    versions = {"ultralytics": ultralytics.__version__, "opencv": cv2.__version__, "numpy": np.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - Ultralytics needs it for .onnx
        pass
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        model_name = str(model.resolve().relative_to(repo))
    except ValueError:
        model_name = str(model)
    return {
        "format": FORMAT_VERSION,
        "generator": "scripts/make_golden.py",
        "model": model_name,
        "model_id": model_id_of(model),
        "ultralytics": versions["ultralytics"],
        "versions": versions,
        "predict": {"imgsz": IMGSZ, "iou": IOU, "confidences": list(CONFIDENCES), "max_det": 300, "agnostic": False},
        "images_dir": DEMO_DIR if any(r.get("reference") for r in recipes) else IMAGES_DIR,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "images": images,
    }


def dump_json(doc: Mapping[str, Any]) -> str:
    """JSON with one line per box (lists of numbers are not broken over lines)."""
    text = json.dumps(doc, indent=1)
    numbers = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")
    text = numbers.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", action="store_true", help="the golden-reference model, on composites")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--out", type=Path, default=None, help="golden JSON to write")
    args = p.parse_args(argv)
    model = args.model or (REFERENCE_MODEL if args.reference else DEFAULT_MODEL)
    args.out = args.out or (REFERENCE_OUT if args.reference else DEFAULT_OUT)
    doc = predict_all(model, REFERENCE_RECIPES if args.reference else RECIPES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump_json(doc))
    counts = {im["name"]: {k: len(v["classes"]) for k, v in im["results"].items()} for im in doc["images"]}
    print(f"wrote {args.out} for model {doc['model_id']} (ultralytics {doc['ultralytics']})")
    for name, c in counts.items():
        print(f"  {name:24s} " + "  ".join(f"conf {k}: {n:3d}" for k, n in c.items()))
    total = sum(n for c in counts.values() for n in c.values())
    if total == 0:
        print("warning: no detections at all: the parity test would be vacuous", file=sys.stderr)
    for quiet in ("white", "r-self"):
        if any(counts.get(quiet, {}).values()):
            print(f"warning: frame {quiet} has detections {counts[quiet]}; expected none", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
