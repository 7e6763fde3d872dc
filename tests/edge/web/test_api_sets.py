"""Decision sets over the HTTP API of a running station (real uvicorn on loopback): listed, applied
with the token and audited, refused clearly (and audited) without it or for an unknown name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.edge.web.conftest import Station, start_station

NO_SIDECAR = {"thresholds_file": None}
SETS = {"strict": {"min_confidence": 0.1, **NO_SIDECAR}, "loose": {"min_confidence": 0.95, **NO_SIDECAR}}


@pytest.fixture(scope="module")
def station(
    tmp_path_factory: pytest.TempPathFactory, reference_model_path: Path, demo_images: Path, demo_references: Path
) -> Iterator[Station]:
    yield from start_station(
        tmp_path_factory.mktemp("sets"),
        reference_model_path,
        demo_images,
        demo_references,
        decision=NO_SIDECAR,
        decision_sets=SETS,
    )


def auth(station: Station, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {station.token}", **extra}


def sets(c: httpx.Client) -> dict[str, Any]:
    return dict(c.get("/api/v1/decision/sets").json())


def changes(c: httpx.Client) -> list[dict[str, Any]]:
    return list(c.get("/api/v1/changes", params={"limit": 500}).json())


def test_sets_are_listed_applied_audited_and_refused_clearly(station: Station) -> None:
    with httpx.Client(base_url=station.url, timeout=30) as c:
        assert sets(c) == {"active": "default", "sets": ["default", "loose", "strict"]}
        n = len(changes(c))
        # refused: no token, an unknown name, bad bodies; each changes nothing
        r = c.put("/api/v1/decision/set", json={"name": "loose"})
        assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
        r = c.put("/api/v1/decision/set", json={"name": "tight"}, headers=auth(station))
        assert r.status_code == 404 and "unknown decision set 'tight'" in r.json()["detail"]
        rows = changes(c)
        assert len(rows) == n + 2 and [(x["what"], x["outcome"]) for x in rows[:2]] == [
            ("decision_set", "refused"),
            ("decision_set", "refused"),
        ]
        assert rows[0]["after"] == "tight" and rows[0]["detail"] == "unknown decision set 'tight'"
        for body in ({"name": ""}, {"name": "loose", "extra": 1}, {"set": "loose"}):
            assert c.put("/api/v1/decision/set", json=body, headers=auth(station)).status_code == 422
        assert sets(c)["active"] == "default" and c.get("/api/v1/decision").json()["min_confidence"] == 0.25

        r = c.put("/api/v1/decision/set", json={"name": "loose"}, headers=auth(station, **{"X-Operator": "qa-ben"}))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["active"] == "loose" and body["before"] == "default" and body["applied"]["min_confidence"] == 0.95
        assert sets(c)["active"] == "loose" and c.get("/api/v1/decision").json()["min_confidence"] == 0.95
        effective = c.get("/api/v1/decision/effective").json()
        assert set(effective["min_confidence"].values()) == {0.95}
        assert effective["set"] == "loose" and len(effective["rules_id"]) == 12  # what verdicts now carry
        rows = changes(c)
        assert [(x["what"], x["outcome"]) for x in rows[:2]] == [("decision_set", "applied"), ("decision", "applied")]
        assert rows[0]["before"] == "default" and rows[0]["after"] == "loose"
        assert rows[0]["who"].startswith("api token:qa-ben@127.0.0.1")
        # by hand: no set has these rules any more
        hand = dict(c.get("/api/v1/decision").json(), min_confidence=0.5)
        assert c.put("/api/v1/decision", json=hand, headers=auth(station)).status_code == 200
        assert sets(c)["active"] == "custom"
        assert c.post("/api/v1/decision/revert", headers=auth(station)).status_code == 200
        assert sets(c)["active"] == "loose"
        assert c.put("/api/v1/decision/set", json={"name": "default"}, headers=auth(station)).status_code == 200
        assert sets(c)["active"] == "default" and c.get("/api/v1/decision").json()["min_confidence"] == 0.25
