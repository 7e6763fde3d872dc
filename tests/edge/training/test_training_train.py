"""`train()` maps its options onto Ultralytics' train call: from scratch, fine-tune, resume.

Ultralytics is not installed in the service environment, so a recording stand-in takes its
place in `sys.modules`; what is checked is our mapping, not Ultralytics' training.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from edge.training.train import INSPECTION_AUGMENT, PIN_THREADS_EVENTS, TrainOptions, export_onnx, train


class RecordingYOLO:
    calls: list[tuple[str, dict[str, Any]]] = []
    callbacks: dict[str, list[Any]] = {}

    def __init__(self, model: str) -> None:
        self.model = model

    def add_callback(self, event: str, func: Any) -> None:
        RecordingYOLO.callbacks.setdefault(event, []).append(func)

    def train(self, **kwargs: Any) -> None:
        RecordingYOLO.calls.append((self.model, kwargs))

    def export(self, **kwargs: Any) -> str:
        """Like Ultralytics: writes <checkpoint stem>.onnx beside the checkpoint, returns its path."""
        RecordingYOLO.calls.append((self.model, {"export": kwargs}))
        produced = Path(self.model).with_suffix(".onnx")
        produced.write_bytes(b"onnx")
        return str(produced)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    RecordingYOLO.calls = []
    RecordingYOLO.callbacks = {}
    fake = types.ModuleType("ultralytics")
    fake.YOLO = RecordingYOLO  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ultralytics", fake)
    return RecordingYOLO.calls


def test_yaml_trains_from_scratch_with_inspection_augmentation(recorded: list, tmp_path: Path) -> None:
    train(TrainOptions(data=tmp_path / "d.yaml", project=tmp_path / "runs", name="a", hours=0.5))
    ((model, kw),) = recorded
    assert model == "yolo11n.yaml" and kw["pretrained"] is False and kw["time"] == 0.5
    assert {k: kw[k] for k in INSPECTION_AUGMENT} == INSPECTION_AUGMENT
    assert kw["hsv_h"] == kw["hsv_s"] == kw["hsv_v"] == 0.0


def test_checkpoint_fine_tunes_from_its_weights(recorded: list, tmp_path: Path) -> None:
    train(TrainOptions(data=tmp_path / "d.yaml", model="models/x.pt", project=tmp_path / "runs", name="b"))
    ((model, kw),) = recorded
    assert model == "models/x.pt" and kw["pretrained"] is True and "resume" not in kw


def test_existing_last_checkpoint_resumes(recorded: list, tmp_path: Path) -> None:
    last = tmp_path / "runs" / "c" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    train(TrainOptions(data=tmp_path / "d.yaml", project=tmp_path / "runs", name="c"))
    ((model, kw),) = recorded
    assert model == str(last.resolve()) and kw == {"resume": True}


def test_overrides_win_and_cli_parses_them(recorded: list, tmp_path: Path) -> None:
    import argparse

    from edge.training.cli import _override

    pairs = [_override(t) for t in ("mosaic=0", "lr0=0.0002", "optimizer=AdamW", "cos_lr=true")]
    assert pairs == [("mosaic", 0), ("lr0", 0.0002), ("optimizer", "AdamW"), ("cos_lr", True)]
    for bad in ("mosaic", "=1", "a b=1", "x=[1, 2]"):
        with pytest.raises(argparse.ArgumentTypeError):
            _override(bad)
    opts = TrainOptions(data=tmp_path / "d.yaml", project=tmp_path / "runs", name="d", overrides=dict(pairs))
    train(opts)
    ((_, kw),) = recorded
    assert kw["mosaic"] == 0 and kw["lr0"] == 0.0002 and kw["optimizer"] == "AdamW" and kw["cos_lr"] is True


def test_cpu_training_uses_every_core_not_ultralytics_cpu_count_minus_one(
    recorded: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ultralytics resets torch to cpu_count - 1 threads; our callbacks set the asked number again."""
    state = {"threads": 1}
    fake_torch = types.ModuleType("torch")
    fake_torch.get_num_threads = lambda: state["threads"]  # type: ignore[attr-defined]
    fake_torch.set_num_threads = lambda n: state.update(threads=n)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    train(TrainOptions(data=tmp_path / "d.yaml", project=tmp_path / "runs", name="e"))
    assert set(RecordingYOLO.callbacks) == set(PIN_THREADS_EVENTS)
    for event in PIN_THREADS_EVENTS:
        state["threads"] = 1  # what Ultralytics' select_device leaves on a 2-core host
        (pin,) = RecordingYOLO.callbacks[event]
        pin(object())
        assert state["threads"] == 2
    RecordingYOLO.callbacks = {}
    train(TrainOptions(data=tmp_path / "d.yaml", project=tmp_path / "runs", name="f", threads=1, device="0"))
    assert RecordingYOLO.callbacks == {}  # a GPU run: torch's CPU threads are left alone


def test_export_copies_to_out_or_leaves_it_where_ultralytics_wrote_it(recorded: list, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    out = export_onnx(ckpt, tmp_path / "models" / "mine.onnx", 320)
    assert out.read_bytes() == b"onnx"
    ((_, kw),) = recorded
    assert kw["export"]["imgsz"] == 320 and kw["export"]["format"] == "onnx" and kw["export"]["dynamic"] is False
    assert export_onnx(ckpt, tmp_path / "m.onnx", 320) == tmp_path / "m.onnx"  # the same file: no copy onto itself


def test_export_marks_a_model_trained_on_reference_composites(
    recorded: list, tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from edge.engines.model import read_model_info

    def export(self: RecordingYOLO, **kwargs: Any) -> str:  # a real ONNX file this time
        produced = Path(self.model).with_suffix(".onnx")
        shutil.copyfile(model_path, produced)
        return str(produced)

    monkeypatch.setattr(RecordingYOLO, "export", export)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    assert read_model_info(export_onnx(ckpt, tmp_path / "plain.onnx", 320)).reference_input is False
    marked = export_onnx(ckpt, tmp_path / "ref.onnx", 320, reference=True)
    assert read_model_info(marked).reference_input is True
