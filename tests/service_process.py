"""`edge-inspect run` as a child process, for the crash tests: start it, wait until its JSON-lines
sink holds N verdicts, kill it with SIGKILL mid-stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def jsonl_ids(path: Path) -> list[str]:
    """The result ids of a JSON-lines verdict file, in order (a torn last line is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["result_id"])
        except (json.JSONDecodeError, KeyError):
            continue
    return out


def start_service(config: Path, workdir: Path, log_name: str, *args: str) -> subprocess.Popen[bytes]:
    """`edge-inspect run -c config --no-status [args]` in `workdir`, its output in workdir/log_name."""
    exe = Path(sys.executable).parent / "edge-inspect"
    with (workdir / log_name).open("w") as log:
        return subprocess.Popen([str(exe), "run", "-c", str(config), "--no-status", *args],
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def wait_for_verdicts(proc: subprocess.Popen[bytes], jsonl: Path, n: int, log: Path, timeout: float = 240) -> None:
    """Until the JSON-lines file holds `n` verdicts; fails with the log's tail if the service exits first."""
    deadline = time.monotonic() + timeout
    while len(jsonl_ids(jsonl)) < n:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"the service wrote no {n} verdicts in time"
        time.sleep(0.05)


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL mid-stream (frames in flight, sinks busy) and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
