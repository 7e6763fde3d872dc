"""The demo shows the PLC side end to end: its own subscribers count what arrived."""

from __future__ import annotations

import json
from pathlib import Path

from edge.cli import main


def test_demo_reports_what_its_plc_subscribers_received(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    summary = tmp_path / "summary.json"
    rc = main(["demo", "--frames", "20", "--no-web", "--engine", "onnxruntime", "--out", str(out),
               "--summary-json", str(summary)])
    assert rc == 0
    plc = json.loads(summary.read_text())["plc"]
    print("demo plc:", plc)
    assert plc["mqtt"]["published"] == plc["mqtt"]["acked"] == plc["mqtt"]["received"] == 20
    # the demo's OPC UA client logs in once the service's server is up, around when the first frames arrive
    assert plc["opcua"]["published"] == 20 and 0 < plc["opcua"]["events_received"] <= 20
    assert plc["mqtt"]["broker"].startswith("127.0.0.1:") and plc["opcua"]["endpoint"].startswith("opc.tcp://127.0.0.1:")
