from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main
from edge.config import load_config, parse_config
from edge.errors import ConfigError

GOOD = """\
version: "7"
cameras:
  - type: replay
    name: line1
    path: images
    rate_ppm: 600
engine:
  type: onnxruntime
  model: model.onnx
pipeline:
  budget_ms: 150
  ring_slots: 4
sinks:
  - type: jsonl
    path: out/verdicts.jsonl
  - type: log
"""


def test_good_config(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.app.pipeline.budget_ms == 150
    assert cfg.cameras[0].type == "replay" and cfg.engine.type == "onnxruntime"
    assert [s.type for s in cfg.sinks] == ["jsonl", "log"]
    assert cfg.config_version.startswith("7+")
    assert cfg.base_dir == tmp_path.resolve()


def test_every_error_with_path_and_line() -> None:
    text = GOOD.replace("rate_ppm: 600", "rate_ppm: 600\n    rate_pmm: 5").replace(
        "budget_ms: 150", "budget_ms: -1"
    ).replace("type: log", "type: logg")
    with pytest.raises(ConfigError) as ei:
        parse_config(text, "c.yaml")
    errs = ei.value.errors
    assert len(errs) == 3, errs
    joined = "\n".join(errs)
    assert "c.yaml:7: cameras[0].rate_pmm: unknown key" in joined
    assert "c.yaml:12: pipeline.budget_ms: Input should be greater than 0 (got -1)" in joined
    assert "c.yaml:17: sinks[1].type: unknown sink type 'logg'; known: jsonl, log" in joined


def test_unknown_top_level_key_and_missing_engine() -> None:
    text = "cameras:\n  - type: replay\n    path: x\nengnie: {}\n"
    with pytest.raises(ConfigError) as ei:
        parse_config(text, "c.yaml")
    joined = "\n".join(ei.value.errors)
    assert "engnie: unknown key" in joined
    assert "engine: Field required" in joined


def test_env_secrets() -> None:
    text = GOOD.replace("path: out/verdicts.jsonl", "path: ${OUT_DIR}/v.jsonl").replace(
        "path: images", "path: ${IMAGES:-imgs}"
    )
    cfg = parse_config(text, "c.yaml", env={"OUT_DIR": "/data"})
    assert cfg.sinks[0].path == "/data/v.jsonl"
    assert cfg.cameras[0].path == "imgs"
    with pytest.raises(ConfigError, match="OUT_DIR is not set"):
        parse_config(text, "c.yaml", env={})


def test_duplicate_camera_names() -> None:
    text = GOOD.replace(
        "engine:", "  - type: replay\n    name: line1\n    path: other\nengine:"
    )
    with pytest.raises(ConfigError, match="unique"):
        parse_config(text, "c.yaml")


def test_bad_yaml() -> None:
    with pytest.raises(ConfigError, match="c.yaml:3: not valid YAML"):
        parse_config("a: 1\nb: [\n", "c.yaml")


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    assert main(["config", "check", str(p)]) == 2  # checked like run: the model must be there
    assert "model.onnx: model file not found" in capsys.readouterr().err
    (tmp_path / "model.onnx").symlink_to(model_path)
    p.write_text(GOOD + "metrics: {port: 0}\n")
    assert main(["config", "check", str(p)]) == 0
    assert "OK" in capsys.readouterr().out
    p.write_text(GOOD.replace("ring_slots: 4", "ring_slots: 1\n  ringslots: 3"))
    assert main(["config", "check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "2 error(s)" in err and "pipeline.ring_slots" in err and "pipeline.ringslots: unknown key" in err
