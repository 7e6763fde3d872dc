"""The audit holds every emitted verdict after a SIGKILL of `edge-inspect run` mid-stream: every
verdict the JSON-lines file saw is in the audit database once the audit's journal is delivered
(what a restart does first): the JSON-lines sink and the audit journal through one outbox, so
a verdict reaches neither before it is on disk for both."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge.audit.sink import AuditSink
from edge.audit.store import AuditStore
from edge.sinks.outbox import Outbox
from tests.service_process import jsonl_ids, sigkill, start_service, wait_for_verdicts


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
    proc = start_service(config, tmp_path, "run.log")
    try:
        wait_for_verdicts(proc, tmp_path / "verdicts.jsonl", 60, tmp_path / "run.log")
        sigkill(proc)  # mid-stream: frames in flight, sinks busy
    finally:
        if proc.poll() is None:
            proc.kill()

    seen = jsonl_ids(tmp_path / "verdicts.jsonl")
    store = AuditStore(tmp_path / "state" / "audit.sqlite")
    in_audit_at_kill = store.result_ids()
    # what a restart does first: the audit writes what the outbox still holds for it
    sink = AuditSink(store)
    outbox = Outbox([sink], tmp_path / "state" / "journal" / "outbox.sqlite")
    outbox.start()
    sink.start()
    outbox.close(timeout=5)
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
