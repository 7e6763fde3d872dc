"""The demo serves the status page, prints its URL and, with --serve-after, keeps serving after
the frames end until Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def test_demo_prints_the_url_and_keeps_serving_after_the_frames(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "edge-inspect"
    proc = subprocess.Popen(
        [
            str(exe),
            "demo",
            "--frames",
            "12",
            "--engine",
            "onnxruntime",
            "--rate-ppm",
            "600",
            "--web-port",
            "0",
            "--serve-after",
            "--out",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    url = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"status page (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
            if "still serving" in line:
                break
            assert time.monotonic() < deadline, "".join(lines[-30:])
        assert url is not None, "".join(lines[-30:])
        status = httpx.get(url + "api/v1/status", timeout=30).json()  # the frames are done, the page is up
        assert status["stats"]["decided_total"] == 12
        assert httpx.get(url, timeout=30).status_code == 200
        assert len(httpx.get(url + "api/v1/verdicts", params={"limit": 50}, timeout=30).json()["items"]) == 12
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines[-30:]) + (rest or "")
    assert (tmp_path / "out" / "state" / "audit.sqlite").is_file()
