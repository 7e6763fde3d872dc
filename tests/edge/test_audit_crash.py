"""The audit holds every emitted verdict after a SIGKILL of `edge-inspect run` mid-stream: every
verdict the JSON-lines file saw is in the audit database once the audit's journal is delivered
(what a restart does first)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from edge.audit.sink import AuditSink
from edge.audit.store import AuditStore

REPO = Path(__file__).resolve().parents[2]


def jsonl_ids(path: Path) -> list[str]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["result_id"])
        except (json.JSONDecodeError, KeyError):  # a torn last line
            continue
    return out


def test_audit_holds_every_verdict_after_sigkill(
    tmp_path: Path, reference_model_path: Path, demo_images: Path, demo_references: Path
) -> None:
    cfg = {
        "version": "crash-test",
        "cameras": [
            {
                "type": "replay",
                "name": "line1",
                "path": str(demo_images),
                "references": str(demo_references),
                "rate_ppm": 900,
                "loop": True,
            }
        ],
        "engine": {"type": "onnxruntime", "model": str(reference_model_path), "intra_op_threads": 1, "warmup": 1},
        "pipeline": {"budget_ms": 2000},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "verdicts.jsonl")}],
        "metrics": {"port": 0},
        "state_dir": str(tmp_path / "state"),
        "evidence": {"enabled": True, "min_free_mb": 0},
    }
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(cfg))
    exe = Path(sys.executable).parent / "edge-inspect"
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "run", "-c", str(config), "--no-status"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 240
        while len(jsonl_ids(tmp_path / "verdicts.jsonl")) < 60:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the service wrote no 60 verdicts in time"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: frames in flight, sinks busy
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL

    seen = jsonl_ids(tmp_path / "verdicts.jsonl")
    store = AuditStore(tmp_path / "state" / "audit.sqlite")
    in_audit_at_kill = store.result_ids()
    # what a restart does first: the audit sink delivers what its journal still holds
    sink = AuditSink(store, journal_path=tmp_path / "state" / "journal" / "audit.sqlite")
    sink.start()
    sink.close(timeout=30)
    in_audit = store.result_ids()
    store.close()
    missing = set(seen) - in_audit
    print(
        f"jsonl saw {len(seen)}, audit rows at kill {len(in_audit_at_kill)}, after journal {len(in_audit)}, "
        f"replayed {sink.health()['replayed']}"
    )
    assert len(seen) >= 60 and len(set(seen)) == len(seen)
    assert not missing, f"{len(missing)} verdicts the JSONL saw are not in the audit: {sorted(missing)[:5]}"
    assert in_audit_at_kill <= in_audit
