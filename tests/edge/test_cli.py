from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.config_docs import reference

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_demo_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the auto engine's probe cache goes under ~/.cache
    out = tmp_path / "s.json"
    args = ["demo", "--frames", "60", "--headless", "--summary-json", str(out), "--out", str(tmp_path)]
    rc = main([*args, "--rate-ppm", "3000"])
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["frames_in"] == 60 == sum(s["verdicts"].values())
    assert {"p50", "p99", "max"} <= set(s["latency_ms"]) and {"p50", "p99"} <= set(s["engine_ms"])
    assert {"part_recall", "false_reject_rate"} <= set(s["accuracy"])
    lines = (tmp_path / "verdicts.jsonl").read_text().splitlines()
    assert len(lines) == 60
    err = capsys.readouterr().err
    assert "fps" in err and "p99" in err  # the live status line
    assert (tmp_path / ".cache" / "edge-inspect" / "engine-choice.json").is_file()  # auto measured and cached


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_pass_config_check(example: str) -> None:
    assert main(["config", "check", str(EXAMPLES / example)]) == 0


def test_run_example_for_some_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_OUT", str(tmp_path))
    summary = tmp_path / "s.json"
    rc = main(["run", "-c", str(EXAMPLES / "replay-folder.yaml"), "--frames", "20", "--summary-json", str(summary)])
    assert rc == 0
    s = json.loads(summary.read_text())
    assert s["frames_in"] == 20 == sum(s["verdicts"].values())
    assert s["config_version"].startswith("example-replay+")
    assert len((tmp_path / "verdicts.jsonl").read_text().splitlines()) == 20


def test_run_golden_reference_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped golden-reference model, each demo board against its reference: the 10 boards
    under test among the first 20 frames are rejected, their templates pass."""
    monkeypatch.setenv("EDGE_OUT", str(tmp_path))
    summary = tmp_path / "s.json"
    example = EXAMPLES / "golden-reference.yaml"
    assert main(["run", "-c", str(example), "--frames", "20", "--summary-json", str(summary)]) == 0
    s = json.loads(summary.read_text())
    assert s["frames_in"] == 20 and s["verdicts"] == {"pass": 10, "reject": 10, "failsafe": 0}
    assert s["accuracy"]["part_recall"] == 1.0 and s["accuracy"]["false_reject_rate"] == 0.0


def test_run_with_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("cameras: []\nengine: {type: onnxruntime}\n")
    assert main(["run", "-c", str(p)]) == 2
    err = capsys.readouterr().err
    assert "cameras" in err and "engine.model" in err


def test_config_reference_is_current() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"
    stale = "docs/CONFIG.md is stale: run `edge-inspect config reference --out docs/CONFIG.md`"
    assert doc.read_text() == reference(), stale


def test_camera_node_the_device_lacks_stops_with_a_clear_error(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "station.yaml"
    p.write_text(
        "cameras:\n"
        "  - type: genicam\n"
        "    name: top\n"
        "    node_overrides: {ExposureTimee: 800}\n"
        f"engine: {{type: onnxruntime, model: {model_path}}}\n"
        "metrics: {port: 0}\n"
    )
    assert main(["run", "-c", str(p), "--no-status"]) == 1
    err = capsys.readouterr().err
    assert "ExposureTimee" in err and "camera top" in err
