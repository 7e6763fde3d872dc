"""CSV export of the audit trail over a time range (streamed, a chunk of rows at a time)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timezone

from edge.audit.store import AuditStore

CSV_COLUMNS = (
    "result_id",
    "decided_utc",
    "part_id",
    "frame_id",
    "camera",
    "verdict",
    "failsafe_reason",
    "classes",
    "rules",
    "reasons",
    "detections",
    "latency_ms",
    "margin_ms",
    "model_id",
    "config_version",
    "recipe",
    "decision_set",
    "rules_id",
    "evidence_id",
)


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")


def iter_csv(store: AuditStore, since_ns: int | None, until_ns: int | None) -> Iterator[str]:
    """The CSV text of every verdict in [since, until), oldest first, header line first."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    n = 0
    for row in store.iter_range(since_ns, until_ns):
        writer.writerow(
            [
                row["result_id"],
                _utc(row["decided_wall_ns"]),
                row["part_id"],
                row["frame_id"],
                row["camera"],
                row["verdict"],
                row["failsafe_reason"] or "",
                ";".join(row["classes"]),
                ";".join(row["rules"]),
                " | ".join(str(r.get("message", "")) for r in row["reasons"]),
                ";".join(
                    f"{d.get('class')}@{d.get('confidence')}:{','.join(str(v) for v in d.get('box', []))}"
                    for d in row["detections"]
                ),
                row["latency_ms"],
                row["margin_ms"] if row["margin_ms"] is not None else "",
                row["model_id"] or "",
                row["config_version"] or "",
                row["recipe"] or "",
                row["decision_set"] or "",
                row["rules_id"] or "",
                row["evidence_id"] or "",
            ]
        )
        n += 1
        if n % 200 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
