"""`edge-inspect train`: Ultralytics training tuned for inspection images, then ONNX export.

Needs the `train` extra (ultralytics, torch). Imported lazily so the service never pulls torch.
Inspection images are binary/grey line-scan crops: flips are valid, colour jitter is not, and
defects are small, so mosaic stays on and scale jitter is mild. Training resumes from
`<project>/<name>/weights/last.pt` when that exists.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.engines.model import mark_reference_input
from edge.errors import EdgeInspectError

log = logging.getLogger(__name__)

# Augmentation suited to binarised PCB crops: no hue/saturation/value jitter, flips both ways.
INSPECTION_AUGMENT: dict[str, Any] = {
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
    "fliplr": 0.5,
    "flipud": 0.5,
    "degrees": 0.0,
    "translate": 0.1,
    "scale": 0.25,
    "mosaic": 1.0,
    "mixup": 0.0,
    "close_mosaic": 5,
}


@dataclass
class TrainOptions:
    data: Path
    model: str = "yolo11n.yaml"
    imgsz: int = 320
    epochs: int = 100
    hours: float | None = None
    batch: int = 16
    workers: int = 2
    device: str = "cpu"
    project: Path = Path("runs/train")
    name: str = "pcb"
    seed: int = 0
    cache: str = "ram"
    val_each_epoch: bool = True
    # Torch threads for CPU training; None: every core. Ultralytics pins cpu_count - 1 (one
    # thread on a 2-core host, half the machine: 2.08 s per batch of 16 at 320 there, against
    # 1.10 s with both cores).
    threads: int | None = None
    # Further Ultralytics train arguments (e.g. {"mosaic": 0.0, "lr0": 0.0002} for a short
    # polishing run); they win over the defaults above and INSPECTION_AUGMENT.
    overrides: dict[str, Any] = field(default_factory=dict)


def _require_ultralytics() -> Any:
    try:
        import ultralytics
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise EdgeInspectError(
            "training needs the 'train' extra: pip install 'edge-inspect[train]'"
        ) from exc
    return ultralytics


PIN_THREADS_EVENTS = ("on_pretrain_routine_end", "on_train_epoch_start")


def pin_cpu_threads(model: Any, threads: int) -> None:
    """Make a CPU run use `threads` torch threads: Ultralytics' `select_device` resets them to
    cpu_count - 1 when the trainer starts, so this is set again at its start and every epoch."""

    def pin(_trainer: Any) -> None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    for event in PIN_THREADS_EVENTS:
        model.add_callback(event, pin)


def train(opts: TrainOptions) -> Path:
    """Train (or resume) and return the path of the best checkpoint."""
    ultralytics = _require_ultralytics()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    last = opts.project.resolve() / opts.name / "weights" / "last.pt"
    threads = opts.threads or os.cpu_count() or 1
    kwargs: dict[str, Any]
    if last.is_file():
        log.info("resuming from %s", last)
        model = ultralytics.YOLO(str(last))
        kwargs = {"resume": True}
    else:
        model = ultralytics.YOLO(opts.model)
        kwargs = dict(INSPECTION_AUGMENT)
        kwargs.update(
            data=str(opts.data.resolve()),
            imgsz=opts.imgsz,
            epochs=opts.epochs,
            batch=opts.batch,
            workers=opts.workers,
            device=opts.device,
            project=str(opts.project.resolve()),
            name=opts.name,
            exist_ok=True,
            seed=opts.seed,
            cache=opts.cache,
            # A checkpoint as `model` means fine-tune from its weights; a yaml trains from scratch.
            # (Ultralytics rebuilds the model from its yaml when pretrained is False.)
            pretrained=str(opts.model).endswith(".pt"),
            plots=False,
            val=opts.val_each_epoch,
            amp=False,
            verbose=True,
        )
        if opts.hours is not None:
            kwargs["time"] = opts.hours
        kwargs.update(opts.overrides)
    if opts.device == "cpu":
        pin_cpu_threads(model, threads)
        log.info("training on the CPU with %d torch threads", threads)
    model.train(**kwargs)
    best = opts.project.resolve() / opts.name / "weights" / "best.pt"
    return best if best.is_file() else last


def export_onnx(checkpoint: Path, out: Path, imgsz: int, half: bool = False, reference: bool = False) -> Path:
    """Export a checkpoint to ONNX (opset 17, static batch 1) with Ultralytics metadata.

    `reference`: the model was trained on golden-reference composites; say so in its metadata,
    so the service composes each frame with its reference before inference.
    """
    ultralytics = _require_ultralytics()
    model = ultralytics.YOLO(str(checkpoint))
    produced = Path(model.export(format="onnx", imgsz=imgsz, opset=17, simplify=True, dynamic=False, half=half))
    out.parent.mkdir(parents=True, exist_ok=True)
    if produced.resolve() != out.resolve():  # Ultralytics writes it beside the checkpoint
        shutil.copyfile(produced, out)
    if reference:
        mark_reference_input(out)
    log.info("exported %s -> %s", checkpoint, out)
    return out
