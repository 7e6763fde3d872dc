"""`edge-inspect eval`: measure a YOLO ONNX model on a YOLO dataset split, on the service runtime.

Runs the model through onnxruntime on CPU (no torch, no Ultralytics) - or through the OpenVINO
engine for an OpenVINO IR (`.xml`, e.g. an INT8 model from `edge-inspect quantize`) or with
`runtime="openvino"` - then reports:
- box metrics as `yolo val` computes them (decode at conf 0.001, multi-label, NMS IoU 0.7, at
  most 300 boxes): mAP50, mAP50-95, per-class AP / precision / recall;
- part metrics with the per-class thresholds in force (a thresholds sidecar or one `--conf`):
  part recall, false-reject rate and the part counts, from the (n_images, n_classes)
  max-confidence matrix, which is kept on the result so calibration reuses this one pass;
- a confusion matrix at the same thresholds, and the time per image.
Optionally writes `summary.json` and PNGs (PR curves, confusion matrix, part recall vs
false-reject rate); the PNGs need matplotlib (the `train`/`dev` extra) and are skipped without it.

Dataset layout (as `edge.training.dataset` writes it): `data.yaml` with `path`, `<split>: images/<split>`
and `names`; labels beside the images with `images` replaced by `labels`; an empty or missing
label file is a good part.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from cameras import labels as lbl
from edge.engines.base import Engine, ModelInfo
from edge.engines.letterbox import Preprocessor
from edge.engines.yolo import decode
from edge.errors import DatasetError
from edge.reference import check_input_kind
from edge.thresholds import auto_sidecar
from edge.training.calibrate import (
    CalibrationResult,
    CrossFit,
    Thresholds,
    load_thresholds,
    save_thresholds,
)
from edge.training.partmetrics import (
    BoxMetrics,
    BoxStats,
    PartMetrics,
    confusion_update,
    global_threshold_sweep,
    part_metrics,
)
from edge.training.runner import class_max_scores, decode_multilabel, open_engine

log = logging.getLogger(__name__)

DEFAULT_PART_CONF = 0.25
DEEPPCB_IOU = np.array([0.33])  # the DeepPCB paper scores a detection right at IoU >= 0.33
ThresholdSpec = None | str | Path | float | Thresholds | Mapping[str, float]


@dataclass(frozen=True)
class SplitData:
    images: list[Path]
    labels_dir: Path
    names: tuple[str, ...] | None
    source: Path


def resolve_split(data: Path, split: str = "val") -> SplitData:
    """Find a split's images and labels from a data.yaml, or a folder holding one (or images/<split>)."""
    yaml_path = data if data.is_file() else data / "data.yaml"
    names: tuple[str, ...] | None = None
    if yaml_path.is_file():
        try:
            doc = yaml.safe_load(yaml_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DatasetError(f"{yaml_path}: not valid YAML ({exc})") from exc
        if not isinstance(doc, dict) or split not in doc:
            raise DatasetError(f"{yaml_path}: no '{split}' split")
        root = Path(doc.get("path") or yaml_path.parent)
        if not root.is_absolute():
            root = yaml_path.parent / root
        images_dir = root / str(doc[split])
        raw_names = doc.get("names")
        if isinstance(raw_names, dict):
            names = tuple(str(raw_names[k]) for k in sorted(raw_names, key=int))
        elif isinstance(raw_names, list):
            names = tuple(str(n) for n in raw_names)
    elif (data / "images" / split).is_dir():
        images_dir = data / "images" / split
    else:
        raise DatasetError(f"{data}: neither a data.yaml nor a folder with data.yaml or images/{split}")
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: image folder of split '{split}' does not exist")
    parts = list(images_dir.parts)
    if "images" not in parts:
        raise DatasetError(f"{images_dir}: cannot derive the labels folder (no 'images' in the path)")
    i = len(parts) - 1 - parts[::-1].index("images")
    labels_dir = Path(*parts[:i], "labels", *parts[i + 1 :])
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in lbl.IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{images_dir}: no images")
    return SplitData(images, labels_dir, names, yaml_path if yaml_path.is_file() else data)


def read_labels(path: Path, width: int, height: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO label file (`cameras.labels.parse_yolo`) as xyxy pixel boxes (float32, clipped to the
    image) and classes (int64); a missing file is a good part (no boxes)."""
    text = lbl.read_label_file(path) or ""
    boxes = lbl.yolo_to_pixels(lbl.parse_yolo(text, source=str(path), num_classes=num_classes), width, height)
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    a = np.array(boxes, np.float64)
    return a[:, 1:].astype(np.float32), a[:, 0].astype(np.int64)


@dataclass
class EvalResult:
    """Everything one evaluation pass measured; `maxconf` + `defective` feed calibration."""

    model: Path
    model_id: str
    names: tuple[str, ...]
    data: Path
    split: str
    images: list[Path]
    defective: np.ndarray  # bool (n_images,)
    maxconf: np.ndarray  # float32 (n_images, n_classes)
    box: BoxMetrics
    part: PartMetrics
    map33: float  # mAP at IoU 0.33, the DeepPCB paper's protocol (its detector: 98.6%)
    thresholds: np.ndarray  # (n_classes,) in force for part metrics and the confusion matrix
    thresholds_source: str
    confusion: np.ndarray  # (nc+1, nc+1) [predicted, true], background last
    speed_ms: dict[str, float]
    conf: float
    iou: float
    plots: list[Path] = field(default_factory=list)
    runtime: str = "onnxruntime (CPU)"

    def save_thresholds(self, path: Path, calibration: CalibrationResult, cross_fitted: CrossFit | None = None) -> Path:
        """Write thresholds calibrated on this evaluation's scores as the sidecar of its model
        (its model id and classes; the data and split they were calibrated on)."""
        return save_thresholds(
            path,
            model_id=self.model_id,
            names=self.names,
            result=calibration,
            model_name=Path(self.model).name,
            data={"path": str(self.data), "split": self.split, "images": len(self.images)},
            cross_fitted=cross_fitted,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "model_id": self.model_id,
            "data": str(self.data),
            "split": self.split,
            "images": len(self.images),
            "instances": int(self.box.labels.sum()),
            "box": {
                "conf": self.conf,
                "iou_nms": self.iou,
                **self.box.to_dict(self.names),
                "mAP33": round(self.map33, 6),
            },
            "part": {
                **self.part.to_dict(),
                "thresholds": {n: round(float(t), 6) for n, t in zip(self.names, self.thresholds, strict=True)},
                "thresholds_source": self.thresholds_source,
            },
            "confusion_matrix": {
                "labels": [*self.names, "background"],
                "rows": "predicted",
                "columns": "true",
                "iou": 0.45,
                "matrix": self.confusion.astype(int).tolist(),
            },
            "speed_ms_per_image": {k: round(v, 3) for k, v in self.speed_ms.items()},
            "runtime": self.runtime,
            "plots": [str(p) for p in self.plots],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }


def resolve_thresholds(
    spec: ThresholdSpec, model: Path, names: Sequence[str], default_conf: float
) -> tuple[np.ndarray, str]:
    """Thresholds in force and where they came from.

    None or "auto": the model's sidecar when present and made for this model file (a stale one is
    ignored with a warning), else `default_conf`; "none": `default_conf`; a path: that sidecar
    (must match the model); a number, a Thresholds or a {class: threshold} mapping: as given.
    """
    if isinstance(spec, Thresholds):
        return spec.vector(names), "given"
    if isinstance(spec, (int, float)):
        return np.full(len(names), float(spec)), f"single threshold {float(spec)}"
    if isinstance(spec, Mapping):
        return Thresholds("", 0.0, dict(spec)).vector(names), "given"
    if spec is None or spec == "auto":
        found = auto_sidecar(model)
        if found is not None:
            return found[0].vector(names), str(found[1])
        return np.full(len(names), default_conf), f"single threshold {default_conf}"
    if spec == "none":
        return np.full(len(names), default_conf), f"single threshold {default_conf}"
    path = Path(spec)
    return load_thresholds(path, model).vector(names), str(path)


EVAL_RUNTIMES = ("auto", "onnxruntime", "openvino")


def open_eval_engine(model: Path, threads: int | None = None, runtime: str = "auto") -> tuple[Engine, ModelInfo, str]:
    """Load `model` on CPU (batch 1, no warm-up): onnxruntime, or OpenVINO for `.xml` or when asked."""
    if runtime not in EVAL_RUNTIMES:
        raise ValueError(f"runtime must be one of {EVAL_RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        runtime = "openvino" if Path(model).suffix.lower() == ".xml" else "onnxruntime"
    if runtime == "onnxruntime":
        engine, info = open_engine(Path(model), threads=threads)
        return engine, info, "onnxruntime (CPU)"
    from edge.engines.openvino import OpenVinoEngineConfig

    config = OpenVinoEngineConfig.model_validate(
        {"type": "openvino", "model": str(Path(model).resolve()), "device": "CPU", "num_threads": threads, "warmup": 0}
    )
    ov_engine = config.build(Path.cwd())
    return ov_engine, ov_engine.load(), "openvino (CPU)"


def evaluate(
    model_path: Path,
    data: Path,
    split: str = "val",
    conf: float = 0.001,
    thresholds: ThresholdSpec = None,
    *,
    part_conf: float = DEFAULT_PART_CONF,
    iou: float = 0.7,
    max_det: int = 300,
    out_dir: Path | None = None,
    summary_json: Path | None = None,
    threads: int | None = None,
    multi_label: bool = True,
    runtime: str = "auto",
) -> EvalResult:
    """Run the model over a split and measure it (see the module doc).

    `runtime`: "auto" (OpenVINO for an `.xml` IR, else onnxruntime), "onnxruntime" or "openvino".
    """
    sd = resolve_split(Path(data), split)
    engine, info, runtime_name = open_eval_engine(Path(model_path), threads=threads, runtime=runtime)
    try:
        names, nc = info.names, info.num_classes
        if sd.names is not None and len(sd.names) != nc:
            raise DatasetError(f"{sd.source}: {len(sd.names)} classes, but the model has {nc}")
        if sd.names is not None and tuple(sd.names) != tuple(names):
            log.warning("dataset class names %s differ from the model's %s", sd.names, names)
        thr, thr_source = resolve_thresholds(thresholds, Path(model_path), names, part_conf)
        pre = Preprocessor(engine.input_buffer()[0])
        decode_fn = decode_multilabel if multi_label else decode
        stats = BoxStats(nc)
        stats33 = BoxStats(nc, DEEPPCB_IOU)
        n = len(sd.images)
        maxconf = np.zeros((n, nc), np.float32)
        defective = np.zeros(n, bool)
        confusion = np.zeros((nc + 1, nc + 1), np.int64)
        t_pre = t_inf = t_post = 0.0
        for i, image in enumerate(sd.images):
            frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if frame is None:
                raise DatasetError(f"{image}: cannot decode image")
            if i == 0:
                check_input_kind(frame, info.reference_input, image)
            h, w = frame.shape[:2]
            gt_boxes, gt_cls = read_labels(sd.labels_dir / f"{image.stem}.txt", w, h, nc)
            t0 = time.perf_counter()
            geom = pre(frame)
            t1 = time.perf_counter()
            raw = engine.infer()
            t2 = time.perf_counter()
            dets = decode_fn(
                raw, layout=info.layout, num_classes=nc, conf=conf, iou=iou, geometry=geom, max_det=max_det
            )
            maxconf[i] = class_max_scores(raw, layout=info.layout, num_classes=nc)
            t3 = time.perf_counter()
            t_pre, t_inf, t_post = t_pre + t1 - t0, t_inf + t2 - t1, t_post + t3 - t2
            defective[i] = gt_cls.size > 0
            stats.add(dets.boxes, dets.scores, dets.classes, gt_boxes, gt_cls)
            stats33.add(dets.boxes, dets.scores, dets.classes, gt_boxes, gt_cls)
            confusion_update(confusion, dets.boxes, dets.scores, dets.classes, gt_boxes, gt_cls, thr)
    finally:
        engine.close()
    ms = 1000.0 / n
    speed = {"preprocess": t_pre * ms, "inference": t_inf * ms, "postprocess": t_post * ms}
    speed["total"] = sum(speed.values())
    result = EvalResult(
        model=Path(model_path),
        model_id=info.model_id,
        names=names,
        data=sd.source,
        split=split,
        images=sd.images,
        defective=defective,
        maxconf=maxconf,
        box=stats.compute(),
        map33=stats33.compute().map50,  # its only IoU threshold is 0.33
        part=part_metrics(maxconf, defective, thr),
        thresholds=thr,
        thresholds_source=thr_source,
        confusion=confusion,
        speed_ms=speed,
        conf=conf,
        iou=iou,
        runtime=runtime_name,
    )
    log.info(
        "evaluated %s on %s/%s: mAP50 %.4f, part recall %.4f, FRR %.4f",
        model_path,
        sd.source,
        split,
        result.box.map50,
        result.part.part_recall,
        result.part.false_reject_rate,
    )
    if out_dir is not None:
        result.plots = write_plots(result, Path(out_dir))
        summary_json = summary_json or Path(out_dir) / "summary.json"
    if summary_json is not None:
        Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_json).write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result


def write_plots(result: EvalResult, out_dir: Path) -> list[Path]:
    """PR curves, confusion matrix and part recall vs false-reject rate as PNGs (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (the 'train' or 'dev' extra): no plots written")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    names, box = result.names, result.box
    paths = [out_dir / "pr_curve.png", out_dir / "confusion_matrix.png", out_dir / "part_curve.png"]

    fig, ax = plt.subplots(figsize=(8, 6), tight_layout=True)
    for c, name in enumerate(names):
        if box.labels[c]:
            ax.plot(box.pr_recall, box.pr_precision[c], lw=1, label=f"{name} {box.ap50[c]:.3f}")
    if box.present.any():
        ax.plot(
            box.pr_recall,
            box.pr_precision[box.present].mean(axis=0),
            lw=3,
            color="blue",
            label=f"all classes {box.map50:.3f} mAP@0.5",
        )
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-recall at IoU 0.5")
    ax.legend(loc="best")
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    labels = [*names, "background"]
    m = result.confusion.astype(np.float64)
    norm = m / np.maximum(m.sum(axis=0, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7), tight_layout=True)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(m):
        if v:
            ax.text(
                c, r, f"{int(v)}", ha="center", va="center", fontsize=8, color="white" if norm[r, c] > 0.5 else "black"
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix (column-normalised, counts shown)")
    fig.colorbar(im, ax=ax)
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)

    sweep = np.unique(np.concatenate([np.linspace(0, 1, 201), result.maxconf.max(axis=1)]))
    recall, frr = global_threshold_sweep(result.maxconf, result.defective, sweep)
    fig, ax = plt.subplots(figsize=(7, 6), tight_layout=True)
    ax.plot(frr, recall, lw=2, label="one threshold for all classes")
    ax.plot(
        [result.part.false_reject_rate],
        [result.part.part_recall],
        "o",
        color="red",
        label=f"in force ({result.thresholds_source})",
    )
    ax.set(
        xlabel="False-reject rate (good parts rejected)",
        ylabel="Part recall (defective parts rejected)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        title="Part recall vs false-reject rate",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
