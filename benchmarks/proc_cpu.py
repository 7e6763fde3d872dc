"""CPU time of processes and threads from Linux /proc, for the benchmarks' per-frame CPU figures."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def stat_cpu_s(stat: Path) -> float | None:
    """User + system CPU seconds in a /proc `stat` file (a process's or a thread's); None if unreadable."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process so far, every thread (0.0 once it is gone)."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat")) or 0.0


def thread_cpu_ms() -> dict[str, float]:
    """CPU time (ms) of each live Python thread of this process so far, by thread name (Linux /proc;
    threads of one name summed)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        cpu = stat_cpu_s(Path(f"/proc/self/task/{t.native_id}/stat"))
        if cpu is not None:
            out[t.name] = out.get(t.name, 0.0) + cpu * 1e3
    return out
