"""What waits in the station's outbox (`edge.sinks.outbox`): per sink, how many verdicts and since
when. Read-only, with the service running or stopped; a backlog is delivered at the next start,
and one for a sink the config no longer names is dropped then."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from edge.doctor.findings import Finding

if TYPE_CHECKING:
    from edge.config import LoadedConfig


def outbox_path(cfg: LoadedConfig) -> Path:
    return cfg.state_path / "journal" / "outbox.sqlite"


def member_names(cfg: LoadedConfig) -> set[str]:
    """The sinks that journal through the outbox: durable sinks with no journal file of their own,
    and the audit when it is on (the names `edge.app.build_service` gives them)."""
    names = set()
    for s in cfg.sinks:
        journal = getattr(s, "journal", None)
        if journal is not None and journal.path is None:
            names.add(s.name or s.type)
    audit = getattr(cfg.app, "audit", None)
    if audit is None or audit.enabled:
        names.add("audit")
    return names


def waiting(path: Path) -> list[tuple[str, int, int | None]]:
    """(sink, verdicts waiting, oldest enqueued wall ns) per sink; raises sqlite3.Error."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)) as db:
        rows = db.execute(
            "SELECT p.sink, COUNT(*), MIN(e.enqueued_wall_ns) FROM pending p JOIN entries e ON e.seq = p.seq "
            "GROUP BY p.sink ORDER BY p.sink"
        ).fetchall()
    return [(str(s), int(n), int(t) if t is not None else None) for s, n, t in rows]


def check_outbox(cfg: LoadedConfig, now_wall_ns: int | None = None) -> list[Finding]:
    path = outbox_path(cfg)
    if not path.is_file():
        return [Finding("outbox", "ok", f"no outbox yet at {path} (created at the first run)")]
    try:
        rows = waiting(path)
    except sqlite3.Error as exc:
        return [Finding("outbox", "warn", f"cannot read the outbox {path} ({exc})",
                        "check the file's owner and permissions (the service's user must write it)")]
    now = time.time_ns() if now_wall_ns is None else now_wall_ns
    members = member_names(cfg)
    out: list[Finding] = []
    for sink, n, oldest in rows:
        age = f", the oldest {(now - oldest) / 3.6e12:.1f} h old" if oldest else ""
        if sink in members:
            out.append(Finding("outbox", "warn", f"{n} verdict(s) wait in the outbox for sink {sink}{age}",
                               f"delivered when the service runs and sink {sink}'s far side takes them"))
        else:
            out.append(Finding("outbox", "warn",
                               f"{n} verdict(s) wait for sink {sink}{age}, which the config no longer names",
                               f"dropped at the next start; to deliver them, configure a sink named {sink!r}"))
    if not out:
        out.append(Finding("outbox", "ok", f"nothing waits in the outbox {path}"))
    return out
