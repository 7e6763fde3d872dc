"""Ultralytics' rows of the engines benchmark: `YOLO(...).predict(frame)` on the same model, on
ONNX Runtime, on OpenVINO (an Ultralytics-style `*_openvino_model/` folder made from our files)
and on the PyTorch checkpoint, each held to the same thread count as ours."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from engines_common import WORK, Bench, Row


def ultralytics_openvino_dir(xml: Path, metadata: dict[str, str], name: str) -> Path:
    """An Ultralytics-style `<name>_openvino_model/` folder (model.xml/.bin + metadata.yaml)."""
    import yaml

    folder = WORK / f"{name}_openvino_model"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(xml, folder / "model.xml")
    shutil.copyfile(xml.with_suffix(".bin"), folder / "model.bin")
    keep = {
        k: v for k, v in metadata.items() if k in ("names", "imgsz", "stride", "task", "batch", "channels", "end2end")
    }
    (folder / "metadata.yaml").write_text(yaml.safe_dump(keep))
    return folder


def fp32_ir(model: Path) -> Path:
    """Our ONNX converted to an FP32 OpenVINO IR (for Ultralytics' OpenVINO backend)."""
    import openvino as ov

    out = WORK / f"{model.stem}-fp32.xml"
    ov.save_model(ov.convert_model(str(model)), str(out), compress_to_fp16=False)
    return out


def ultra(name: str, weights: Path, runtime: str, threads: int, conf: float, iou: float, imgsz: int) -> Bench:
    from ultralytics import YOLO

    yolo = YOLO(str(weights), task="detect")
    kwargs = {"conf": conf, "iou": iou, "imgsz": imgsz, "device": "cpu", "verbose": False}
    yolo.predict(np.full((imgsz, imgsz, 3), 114, np.uint8), **kwargs)  # sets up the predictor and backend
    import torch

    # Ultralytics' select_device() resets torch to cpu_count - 1 threads; its pre/post-processing runs
    # torch ops too, so every Ultralytics entry gets `threads` torch threads, whatever the runtime.
    torch.set_num_threads(threads)
    notes: dict[str, Any] = {
        "threads": enforce_threads(yolo, runtime, weights, threads),
        "torch_threads": torch.get_num_threads(),
    }
    clock = time.perf_counter_ns

    def step(frame: np.ndarray) -> Row:
        t0 = clock()
        r = yolo.predict(frame, **kwargs)[0]
        t1 = clock()
        return (t1 - t0) / 1e6, float(r.speed["inference"]), len(r.boxes)

    def close() -> None:
        nonlocal yolo
        yolo = None

    return Bench(name, "ultralytics", runtime, str(weights), step, close, notes)


def enforce_threads(yolo: Any, runtime: str, weights: Path, threads: int) -> str:
    """Give Ultralytics' runtime the same thread count as ours (it has no setting for it)."""
    backend = getattr(getattr(getattr(yolo, "predictor", None), "model", None), "backend", None)
    if backend is None:
        return "NOT SET: this Ultralytics version has no predictor.model.backend"
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        backend.session = ort.InferenceSession(str(weights), opts, providers=["CPUExecutionProvider"])
        return f"onnxruntime session rebuilt with intra_op_num_threads={threads}"
    if runtime == "openvino":
        import openvino as ov

        xml = next(Path(weights).glob("*.xml"))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        backend.ov_compiled_model = ov.Core().compile_model(str(xml), "CPU", config)
        return f"openvino recompiled on CPU with {config}"
    if runtime == "pytorch":
        import torch

        return f"torch.set_num_threads({threads}) (interop {torch.get_num_interop_threads()})"
    return "not set"
