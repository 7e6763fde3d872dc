"""A sink's write errors never lose or hide a verdict (issue 13): the JSONL file on a full disk
keeps every verdict in its journal, says so in the summary, and delivers them once space returns;
a run killed mid-write leaves a file the next run appends to cleanly, with no verdict twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge.sinks.jsonl import read_records
from tests.reliability.conftest import DEMO_IMAGES, MODEL, REPO, run_service, service_config


def test_a_full_disk_keeps_every_verdict_and_delivers_them_when_space_returns(tmp_path: Path) -> None:
    out = tmp_path / "v.jsonl"
    out.symlink_to("/dev/full")  # every write fails: ENOSPC
    camera = {"path": str(DEMO_IMAGES), "labels": "none"}
    sinks = [{"type": "jsonl", "path": str(out), "journal": {"retry_initial_s": 0.05, "retry_max_s": 0.2}}]
    summary, verdicts = run_service(service_config(tmp_path, camera, sinks=sinks), max_frames=10)
    assert len(verdicts) == 10
    (jsonl,) = [s for s in summary["sinks"] if s["name"] == "jsonl"]
    assert jsonl["written"] == 0 and jsonl["errors"] > 0 and jsonl["backlog"] == 10  # kept, and said so
    assert "No space left" in (jsonl["last_error"] or "")
    out.unlink()  # space returns
    summary2, verdicts2 = run_service(service_config(tmp_path, camera, sinks=sinks), max_frames=2)
    (jsonl2,) = [s for s in summary2["sinks"] if s["name"] == "jsonl"]
    assert jsonl2["written"] == 12 and jsonl2["replayed"] == 10 and jsonl2["backlog"] == 0
    ids = [r["result_id"] for r in read_records(out)]
    assert sorted(ids) == sorted(v.result_id for v in verdicts + verdicts2)


@pytest.mark.slow
def test_a_run_killed_under_load_leaves_a_file_the_next_run_appends_to_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "v.jsonl"
    cfg = {
        "cameras": [{"type": "replay", "name": "cam", "path": str(DEMO_IMAGES), "rate_ppm": 0, "max_in_flight": 2}],
        "engine": {"type": "onnxruntime", "model": str(MODEL), "warmup": 1},
        "pipeline": {"budget_ms": 20_000},
        "sinks": [{"type": "jsonl", "path": str(out)}],
        "metrics": {"port": 0},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "edge.cli", "run", "-c", str(path), "--no-status"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and (not out.exists() or out.stat().st_size < 20_000):
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    before = out.read_bytes()
    assert before, "the first run wrote nothing"
    done = subprocess.run([*cmd, "--frames", "5"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = out.read_bytes()
    assert after.startswith(before)
    lines = after.split(b"\n")
    assert lines[-1] == b""  # ends with a whole line
    parsed = [json.loads(line) for line in lines[len(before.split(b"\n")) - 1 : -1] if line]
    assert len(parsed) >= 5 and all("result_id" in r for r in parsed)  # the second run's records are intact
    ids = [r["result_id"] for r in read_records(out)]
    assert len(ids) == len(set(ids)), "a verdict was written twice"
