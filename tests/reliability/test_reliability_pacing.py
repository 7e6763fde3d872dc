"""`rate_ppm: 0` does what its documentation says: unpaced, it overruns the ring (FAILSAFE
`ring_overflow`, each counted); with `max_in_flight` the line runs exactly as fast as it is judged."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.reliability.conftest import DEMO_IMAGES, run_service, service_config


def _line(tmp_path: Path) -> Path:
    line = tmp_path / "line"
    line.mkdir()
    for f in sorted(DEMO_IMAGES.glob("*.jpg"))[:6]:
        shutil.copy(f, line / f.name)
    return line


def test_rate_zero_unpaced_overruns_the_ring_and_counts_every_frame(tmp_path: Path) -> None:
    cfg = service_config(
        tmp_path, {"path": str(_line(tmp_path)), "mode": "cached", "labels": "none", "max_in_flight": None}
    )
    cfg.app.pipeline.ring_slots = 2
    summary, verdicts = run_service(cfg, max_frames=200)
    assert summary["frames_in"] == 200 == len(verdicts) == sum(summary["verdicts"].values())
    assert summary["failsafe_reasons"].get("ring_overflow", 0) > 0  # as documented: it overruns


def test_rate_zero_with_max_in_flight_is_paced_by_the_pipeline(tmp_path: Path) -> None:
    cfg = service_config(
        tmp_path, {"path": str(_line(tmp_path)), "mode": "cached", "labels": "none", "max_in_flight": 2}
    )
    cfg.app.pipeline.ring_slots = 2
    summary, verdicts = run_service(cfg, max_frames=40)
    assert summary["frames_in"] == 40 == len(verdicts)
    assert summary["failsafe_reasons"].get("ring_overflow", 0) == 0
