from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from edge.config_docs import reference

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_demo_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the auto engine's probe cache goes under ~/.cache
    out = tmp_path / "s.json"
    args = ["demo", "--frames", "60", "--summary-json", str(out), "--out", str(tmp_path), "--web-port", "0"]
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
def test_examples_pass_config_check(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["config", "check", str(EXAMPLES / example)])
    err = capsys.readouterr().err
    if rc != 0 and "is already in use" in err:  # its metrics port is taken on this machine right now
        assert "metrics.port" in err
        return
    assert rc == 0, err


def _example_copy(name: str, tmp_path: Path, camera: dict[str, object], budget_ms: float) -> Path:
    """The shipped example with absolute paths, in tmp_path (its state_dir lands there, not in docs/),
    with camera and budget overrides."""
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    cam = raw["cameras"][0]
    for key in ("path", "references", "labels_dir"):
        if key in cam:
            cam[key] = str((EXAMPLES / cam[key]).resolve())
    raw["engine"]["model"] = str((EXAMPLES / raw["engine"]["model"]).resolve())
    cam.update(camera)
    raw["pipeline"]["budget_ms"] = budget_ms
    out = tmp_path / name
    out.write_text(yaml.safe_dump(raw))
    return out


def test_run_example_for_some_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_OUT", str(tmp_path))
    summary = tmp_path / "s.json"
    example = _example_copy("replay-folder.yaml", tmp_path, {}, budget_ms=200)  # as shipped, paced at 600 ppm
    rc = main(["run", "-c", str(example), "--frames", "20", "--summary-json", str(summary)])
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
    # The example as shipped, but paced by the pipeline (max_in_flight) with a generous budget:
    # a loaded CI machine must not turn the accuracy claim into FAILSAFE timeouts.
    example = _example_copy("golden-reference.yaml", tmp_path, {"rate_ppm": 0, "max_in_flight": 1}, 30_000)
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


def test_frames_must_be_positive_and_headless_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["run", "-c", "x.yaml", "--frames", "-1"],
        ["run", "-c", "x.yaml", "--frames", "0"],
        ["demo", "--frames", "-5"],
        ["demo", "--headless"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err and "unrecognized arguments: --headless" in err


def _station(tmp_path: Path, model: Path | str, extra: str = "", sinks: str = "", metrics: str = "{port: 0}") -> Path:
    images = tmp_path / "imgs"
    images.mkdir(exist_ok=True)
    p = tmp_path / "station.yaml"
    p.write_text(
        "cameras:\n"
        f"  - {{type: replay, name: cam0, path: {images}, rate_ppm: 0, max_in_flight: 1}}\n"
        f"engine: {{type: onnxruntime, model: '{model}'}}\n"
        f"sinks: {sinks or '[{type: log}]'}\n"
        f"metrics: {metrics}\n" + extra
    )
    return p


def _busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


@pytest.mark.parametrize(
    "case",
    [
        "missing_model",
        "model_is_folder",
        "sink_unwritable",
        "thresholds_missing",
        "thresholds_invalid",
        "class_typo",
        "buffers",
        "metrics_host",
        "metrics_port",
        "web_port",
    ],
)
def test_config_check_refuses_what_run_refuses_with_the_same_message(
    case: str, tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model: Path | str = model_path
    extra, sinks, metrics, expect = "", "", "{port: 0}", ""
    held = None
    if case == "missing_model":
        model, expect = tmp_path / "nope.onnx", "model file not found"
    elif case == "model_is_folder":
        (tmp_path / "m.onnx").mkdir()
        model, expect = tmp_path / "m.onnx", "is a folder"
    elif case == "sink_unwritable":
        (tmp_path / "afile").write_text("x")
        sinks, expect = f"[{{type: jsonl, path: {tmp_path}/afile/v.jsonl}}]", "afile is not a folder"
    elif case == "thresholds_missing":
        extra, expect = "decision: {thresholds_file: none.yaml}\n", "none.yaml does not exist"
    elif case == "thresholds_invalid":
        (tmp_path / "t.yaml").write_text("- just\n- a list\n")
        extra, expect = "decision: {thresholds_file: t.yaml}\n", "t.yaml"
    elif case == "class_typo":
        extra, expect = "decision: {classes: {shrot: {max_count: 0}}}\n", "['shrot'] are not classes of the model"
    elif case == "buffers":
        extra = "pipeline: {ring_slots: 8}\n"
        p = _station(tmp_path, model, extra)
        p.write_text(
            p.read_text().replace(
                f"  - {{type: replay, name: cam0, path: {tmp_path / 'imgs'}, rate_ppm: 0, max_in_flight: 1}}\n",
                "  - {type: genicam, name: cam0, num_buffers: 4}\n",
            )
        )
        expect = "num_buffers (4) must exceed pipeline.ring_slots (8)"
    elif case == "metrics_host":
        metrics, expect = "{host: no-such-host.invalid, port: 9}", "metrics.host: cannot resolve"
    elif case == "metrics_port":
        held, port = _busy_port()
        metrics, expect = f"{{host: 127.0.0.1, port: {port}}}", "is already in use"
    elif case == "web_port":
        held, port = _busy_port()
        extra, expect = f"web: {{enabled: true, host: 127.0.0.1, port: {port}}}\n", "web.port: 127.0.0.1"
    try:
        if case != "buffers":
            p = _station(tmp_path, model, extra, sinks, metrics)
        assert main(["config", "check", str(p)]) == 2
        check_err = capsys.readouterr().err
        assert expect in check_err, check_err
        t0 = time.monotonic()
        assert main(["run", "-c", str(p), "--no-status"]) == 2
        run_err = capsys.readouterr().err
    finally:
        if held is not None:
            held.close()
    assert expect in run_err, run_err
    assert len(run_err.strip().splitlines()) == 1, run_err  # one clear line
    assert "Traceback" not in run_err and "Traceback" not in check_err
    assert "loaded" not in run_err  # refused before the model was loaded
    problem = [ln.strip() for ln in check_err.splitlines() if expect in ln][0]
    assert problem in run_err  # the same message, word for word
    assert time.monotonic() - t0 < 60


def _service(config: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(config), "--no-status", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[2],
    )


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not (path.is_file() and path.stat().st_size > 0):
        time.sleep(0.1)


def test_sighup_drains_and_prints_the_summary(tmp_path: Path, model_path: Path, demo_images: Path) -> None:
    p = _station(tmp_path, model_path, sinks=f"[{{type: jsonl, path: {tmp_path}/v.jsonl}}]")
    p.write_text(p.read_text().replace(str(tmp_path / "imgs"), str(demo_images)))
    proc = _service(p, {})
    try:
        _wait_for(tmp_path / "v.jsonl")
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["frames_in"] >= 1 and summary["frames_in"] == sum(summary["verdicts"].values())
    lines = (tmp_path / "v.jsonl").read_text().splitlines()
    assert len(lines) == summary["frames_in"]


def test_an_rtsp_password_from_the_environment_is_never_shown(tmp_path: Path, model_path: Path) -> None:
    secret = "Hunter2-s3cret"
    p = tmp_path / "rtsp.yaml"
    p.write_text(
        "cameras:\n"
        "  - {type: opencv, name: door, source: 'rtsp://admin:${CAM_PW}@127.0.0.1:9/stream', reconnect_max_s: 0.5}\n"
        f"engine: {{type: onnxruntime, model: '{model_path}'}}\n"
        "sinks: [{type: log}]\n"
        "metrics: {port: 0}\n"
        "log_level: DEBUG\n"
    )
    summary = tmp_path / "s.json"
    proc = _service(p, {"CAM_PW": secret}, "--summary-json", str(summary))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not any("lost" in ln for ln in lines) and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(2.0)  # a few reconnect attempts
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        reader.join(10)
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        proc.kill()
    err_seen = "".join(lines)
    text = out + err_seen + (summary.read_text() if summary.exists() else "")
    assert "camera door" in text or "door" in text  # it did log about the camera
    assert "admin:***@127.0.0.1" in text  # the URL is shown, its password is not
    assert secret not in text
    # and in a config error
    p.write_text(p.read_text().replace("reconnect_max_s: 0.5", "reconnect_max_s: -1"))
    proc = _service(p, {"CAM_PW": secret})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "reconnect_max_s" in err and secret not in out + err


def test_a_sink_that_could_not_deliver_is_reported_at_exit(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.jsonl"
    out.symlink_to("/dev/full")  # a full disk: nothing can be written
    p = _station(tmp_path, model_path, sinks=f"[{{type: jsonl, path: {out}}}]")
    p.write_text(p.read_text().replace(str(tmp_path / "imgs"), str(demo_images)))
    summary = tmp_path / "s.json"
    assert main(["run", "-c", str(p), "--frames", "5", "--no-status", "--summary-json", str(summary)]) == 0
    err = capsys.readouterr().err
    assert "warning: sink jsonl: 5 verdict(s) not yet delivered, kept for the next start" in err
    assert "No space left" in err
    assert any("sink jsonl" in w for w in json.loads(summary.read_text())["warnings"])


def test_chatty_libraries_say_only_warnings_at_info_and_everything_at_debug() -> None:
    import logging

    from edge.cli import CHATTY_LIBRARIES, _setup_logging

    saved = {n: logging.getLogger(n).level for n in CHATTY_LIBRARIES}
    try:
        _setup_logging("INFO", quiet_status=False)
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in CHATTY_LIBRARIES)
        assert not logging.getLogger("asyncua.common.subscription").isEnabledFor(logging.INFO)
        _setup_logging("DEBUG", quiet_status=False)
        assert logging.getLogger("asyncua.common.subscription").isEnabledFor(logging.DEBUG)
        _setup_logging("ERROR", quiet_status=False)
        assert not logging.getLogger("asyncua").isEnabledFor(logging.WARNING)
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)
