"""A station with no API token in its environment and the audit trail off: the pages and reads
work (verdicts from the live feed), every write is refused with 403 and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.edge.web.conftest import Station, start_station


@pytest.fixture(scope="module")
def readonly(
    tmp_path_factory: pytest.TempPathFactory, reference_model_path: Path, demo_images: Path, demo_references: Path
) -> Iterator[Station]:
    yield from start_station(
        tmp_path_factory.mktemp("readonly"),
        reference_model_path,
        demo_images,
        demo_references,
        with_token=False,
        audit={"enabled": False},
    )


def test_no_token_means_read_only_and_no_audit_means_live_verdicts(readonly: Station) -> None:
    with httpx.Client(base_url=readonly.url, timeout=30) as c:
        readonly.wait(lambda: len(c.get("/api/v1/verdicts").json()["items"]) >= 3, what="3 live verdicts")
        page = c.get("/api/v1/verdicts").json()
        assert page["source"] == "live (audit off)" and page["next"] is None
        status = c.get("/api/v1/status").json()
        assert status["write_api"] is False and status["audit"] is None
        assert "audit" not in {s["name"] for s in status["sinks"]}
        before = c.get("/api/v1/decision").json()
        for method, path, body in (
            ("PUT", "/api/v1/decision", dict(before, min_confidence=0.9)),
            ("POST", "/api/v1/decision/revert", None),
            ("PUT", "/api/v1/recipe", {"name": "default"}),
            ("PUT", "/api/v1/mode", {"mode": "halted"}),
        ):
            r = c.request(method, path, json=body, headers={"Authorization": "Bearer anything"})
            assert r.status_code == 403 and "write API is disabled" in r.json()["detail"], (path, r.text)
        assert c.get("/api/v1/decision").json() == before
        assert c.get("/api/v1/status").json()["state"] == "running"
        one = page["items"][0]["result_id"]
        r = c.get(f"/api/v1/verdicts/{one}")
        assert r.status_code == 404 and "audit trail is off" in r.json()["detail"]
        assert c.get("/api/v1/changes").status_code == 404
        assert c.get("/").status_code == 200
