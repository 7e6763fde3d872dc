"""The HTTP API of a running station, over a real uvicorn on loopback: reads, writes with the
token, and bad input (wrong types, unknown fields, oversized bodies, missing or wrong token,
path traversal on evidence) answered with a clear 4xx and nothing changed."""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import httpx
import numpy as np
import pytest

from tests.edge.web.conftest import Station

STATIC = Path(__file__).resolve().parents[3] / "edge" / "web" / "static"


@pytest.fixture(scope="module")
def client(station: Station) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=station.url, timeout=30) as c:
        # the line has been running a while: some verdicts in the audit, a reject with its evidence
        station.wait(
            lambda: c.get("/api/v1/verdicts", params={"limit": 10}).json()["items"].__len__() >= 10,
            what="10 verdicts in the audit",
        )
        station.wait(lambda: _reject_with_evidence(c) is not None, what="a reject with its evidence")
        yield c


def _reject_with_evidence(c: httpx.Client) -> dict[str, Any] | None:
    for row in c.get("/api/v1/verdicts", params={"verdict": "REJECT", "limit": 50}).json()["items"]:
        if row["evidence_id"]:
            return dict(row)
    return None


def auth(station: Station, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {station.token}", **extra}


def decision(c: httpx.Client) -> dict[str, Any]:
    return dict(c.get("/api/v1/decision").json())


def changes(c: httpx.Client) -> list[dict[str, Any]]:
    return list(c.get("/api/v1/changes", params={"limit": 500}).json())


# -- reads ------------------------------------------------------------------------------------------
def test_status_is_the_snapshot(client: httpx.Client, station: Station) -> None:
    s = client.get("/api/v1/status").json()
    assert s["state"] == "running" and s["ready"] is True
    assert s["engine"]["reference_input"] is True and "open" in s["engine"]["names"]
    assert s["stats"]["decided_total"] >= 10 and s["budget_ms"] == 2000
    assert s["write_api"] is True
    assert {k["name"] for k in s["sinks"]} >= {"audit", "jsonl"}
    assert s["evidence"]["written"] >= 1


def test_verdicts_page_filter_and_time_range(client: httpx.Client) -> None:
    first = client.get("/api/v1/verdicts", params={"limit": 3}).json()
    assert first["source"] == "audit" and len(first["items"]) == 3 and first["next"]
    second = client.get("/api/v1/verdicts", params={"limit": 3, "before": first["next"]}).json()
    ids = [r["result_id"] for r in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
    rejects = client.get("/api/v1/verdicts", params={"verdict": "REJECT", "limit": 20}).json()["items"]
    assert rejects and all(r["verdict"] == "REJECT" for r in rejects)
    cls = rejects[0]["classes"][0]
    by_class = client.get("/api/v1/verdicts", params={"class": cls, "limit": 20}).json()["items"]
    assert by_class and all(cls in r["classes"] for r in by_class)
    part = rejects[0]["part_id"]
    assert {r["part_id"] for r in client.get("/api/v1/verdicts", params={"part_id": part}).json()["items"]} == {part}
    assert client.get("/api/v1/verdicts", params={"camera": "nope"}).json()["items"] == []
    assert client.get("/api/v1/verdicts", params={"until": "2001-01-01T00:00:00Z"}).json()["items"] == []
    t = rejects[0]["decided_wall_ns"]
    window = client.get(
        "/api/v1/verdicts",
        params={"since": _iso(t - 1_000_000), "until": _iso(t + 1_000_000), "limit": 50},  # +-1 ms (µs in ISO)
    ).json()["items"]
    assert rejects[0]["result_id"] in [r["result_id"] for r in window]


def _iso(ns: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="microseconds")


def test_one_verdict_with_its_evidence_images(client: httpx.Client) -> None:
    row = _reject_with_evidence(client)
    assert row is not None
    v = client.get(f"/api/v1/verdicts/{row['result_id']}").json()
    assert v["verdict"] == "REJECT" and v["reasons"] and v["detections"] and v["model_id"]
    assert set(v["evidence"]) == {"image", "heat", "thumb"}  # a golden-reference model: a heat map too
    for kind, url in v["evidence"].items():
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 50, kind
    assert client.get("/api/v1/verdicts/0000000000000000-0000-00000000").status_code == 404


def test_overlays_are_rendered_on_request_by_id_only(client: httpx.Client) -> None:
    row = _reject_with_evidence(client)
    assert row is not None
    rid = row["result_id"]
    before = client.get("/api/v1/status").json()["evidence"]["rendered"]
    first = client.get(f"/api/v1/evidence/{rid}/heat")
    again = client.get(f"/api/v1/evidence/{rid}/heat")
    assert first.status_code == again.status_code == 200 and first.content == again.content  # cached on disk
    rendered = client.get("/api/v1/status").json()["evidence"]["rendered"]
    assert before <= rendered <= before + 1
    # what capture keeps (the frame as encoded, the record) is no evidence kind: never served by name
    for kind in ("frame", "meta", "frame.jpg", "../" + rid):
        assert client.get(f"/api/v1/evidence/{rid}/{kind}").status_code in (404, 422), kind


def test_csv_export(client: httpx.Client) -> None:
    r = client.get("/api/v1/verdicts.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) >= 10 and {"result_id", "verdict", "rules", "evidence_id"} <= set(rows[0])
    assert client.get("/api/v1/verdicts.csv", params={"until": "2001-01-01T00:00:00Z"}).text.count("\n") == 1


def test_config_is_redacted_and_probes_answer(client: httpx.Client, station: Station) -> None:
    r = client.get("/api/v1/config")
    assert r.status_code == 200
    body = r.json()
    assert body["config"]["cameras"][0]["type"] == "replay" and body["decision"]["min_confidence"] == 0.25
    assert station.token not in r.text
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = client.get("/metrics").text
    assert "edge_verdicts_total" in metrics and 'camera="line1"' in metrics


def test_events_stream_verdicts_and_status(station: Station) -> None:
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=station.url, timeout=30) as c, c.stream("GET", "/api/v1/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                seen.setdefault(event, json.loads(line[6:]))
                if "status" in seen and "verdicts" in seen:
                    break
    assert seen["verdicts"]["reset"] is True and seen["verdicts"]["items"]
    assert seen["status"]["state"] == "running"


def test_pages_and_assets_are_local(client: httpx.Client) -> None:
    for path in ("/", "/rejects", "/api/docs", "/verdict/0000000000000000-0000-00000000"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/api/v1/openapi.json").json()["paths"]["/api/v1/decision"]["put"]
    for f in STATIC.iterdir():  # nothing fetched from elsewhere (the station is offline)
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", f.read_text()), f.name
        assert client.get(f"/static/{f.name}").status_code == 200


# -- writes -----------------------------------------------------------------------------------------
def test_decision_change_applies_live_is_audited_and_reverts(client: httpx.Client, station: Station) -> None:
    before = decision(client)
    names = client.get("/api/v1/status").json()["engine"]["names"]
    effective = client.get("/api/v1/decision/effective").json()
    assert set(effective["min_confidence"]) == set(names) and effective["ignored"] == []
    new = dict(before, classes={n: {"ignore": True} for n in names})  # nothing counts: every part passes
    r = client.put("/api/v1/decision", json=new, headers=auth(station, **{"X-Operator": "qa-anna"}))
    assert r.status_code == 200, r.text
    assert r.json()["applied"]["classes"][names[0]]["ignore"] is True
    changed_at = time.time_ns()
    assert decision(client)["classes"][names[0]]["ignore"] is True
    assert client.get("/api/v1/decision/effective").json()["ignored"] == names  # the compiled rules in force
    # applied live: verdicts judged after the swap are PASS (FAILSAFE aside)
    station.wait(
        lambda: (
            len(client.get("/api/v1/verdicts", params={"since": _iso(changed_at + 300_000_000)}).json()["items"]) >= 3
        ),
        what="3 verdicts after the change",
    )
    after = client.get("/api/v1/verdicts", params={"since": _iso(changed_at + 300_000_000), "limit": 500}).json()
    assert {r["verdict"] for r in after["items"]} <= {"PASS", "FAILSAFE"}
    row = changes(client)[0]
    assert row["what"] == "decision" and row["outcome"] == "applied"
    assert row["who"].startswith("api token:qa-anna@127.0.0.1")
    assert row["before"] == before and row["after"]["classes"][names[0]]["ignore"] is True
    # reversible
    r = client.post("/api/v1/decision/revert", headers=auth(station))
    assert r.status_code == 200 and r.json()["applied"] == before
    assert decision(client) == before
    history = client.get("/api/v1/decision/history").json()
    assert [h["outcome"] for h in history[:2]] == ["applied", "applied"] and history[0]["after"] == before


@pytest.mark.parametrize(
    ("headers", "status", "why"),
    [
        ({}, 401, "missing bearer token"),
        ({"Authorization": "Bearer not-the-token"}, 401, "wrong token"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401, "malformed"),
        ({"Authorization": "Bearer"}, 401, "malformed"),
    ],
)
def test_writes_without_the_token_are_refused_and_audited(
    client: httpx.Client, headers: dict[str, str], status: int, why: str
) -> None:
    before = decision(client)
    n = len(changes(client))
    body = dict(before, min_confidence=0.9)
    r = client.put("/api/v1/decision", json=body, headers=headers)
    assert r.status_code == status and why in r.json()["detail"]
    assert r.headers.get("www-authenticate") == "Bearer"
    assert decision(client) == before
    rows = changes(client)
    assert len(rows) == n + 1 and rows[0]["outcome"] == "refused" and rows[0]["who"].startswith("api anonymous")
    for method, path, payload in (
        ("POST", "/api/v1/decision/revert", None),
        ("PUT", "/api/v1/recipe", {"name": "default"}),
        ("PUT", "/api/v1/mode", {"mode": "halted"}),
    ):
        assert client.request(method, path, json=payload, headers=headers).status_code == status
    assert client.get("/api/v1/status").json()["state"] == "running"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"min_confidence": "high"}, "min_confidence"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"max_count": -1}, "max_count"),
        ({"min_confidenc": 0.3}, "unknown field"),
        ({"classes": {"open": {"min_confidence": 0.3, "colour": "red"}}}, "unknown field"),
        ({"classes": {"scratch": {"min_confidence": 0.3}}}, "not classes of the model"),
        ({"regions_of_interest": [[10, 10, 5, 5]]}, "x2 > x1"),
        ({"thresholds_file": "/etc/passwd"}, "thresholds_file can only be changed in the config file"),
    ],
)
def test_invalid_decisions_are_refused_clearly_and_change_nothing(
    client: httpx.Client, station: Station, body: dict[str, Any], needle: str
) -> None:
    before = decision(client)
    r = client.put("/api/v1/decision", json=dict(before, **body), headers=auth(station))
    assert r.status_code == 422, r.text
    assert needle in r.text
    assert decision(client) == before
    assert changes(client)[0]["outcome"] == "refused"


def test_bodies_that_are_not_json_too_big_or_streamed_too_big_are_refused(
    client: httpx.Client, station: Station
) -> None:
    before = decision(client)
    r = client.put("/api/v1/decision", content=b"min_confidence=0.3", headers=auth(station))
    assert r.status_code == 422
    r = client.put(
        "/api/v1/decision", content=b"{not json", headers=auth(station, **{"Content-Type": "application/json"})
    )
    assert r.status_code == 422
    big = dict(before, regions_of_interest=[[0, 0, 1, 1]] * 2000)  # > max_body_bytes (4096)
    r = client.put("/api/v1/decision", json=big, headers=auth(station))
    assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"min_confidence": 0.3, "ignore_zones": ['
        for _ in range(400):
            yield b"[0, 0, 1, 1], "
        yield b"[0, 0, 1, 1]]}"

    r = client.put("/api/v1/decision", content=chunks(), headers=auth(station, **{"Content-Type": "application/json"}))
    assert r.status_code == 413
    assert decision(client) == before


def test_recipe_and_mode(client: httpx.Client, station: Station) -> None:
    recipes = client.get("/api/v1/recipes").json()
    assert recipes["active"] == "default" and "default" in recipes["recipes"]
    r = client.put("/api/v1/recipe", json={"name": "no-such-recipe"}, headers=auth(station))
    assert r.status_code == 404 and "unknown recipe" in r.json()["detail"]
    assert client.put("/api/v1/recipe", json={"name": ""}, headers=auth(station)).status_code == 422
    assert client.put("/api/v1/mode", json={"mode": "stopped"}, headers=auth(station)).status_code == 422
    assert client.put("/api/v1/mode", json={"mode": "single", "n": 0}, headers=auth(station)).status_code == 422
    assert client.get("/api/v1/status").json()["state"] == "running"
    r = client.put("/api/v1/mode", json={"mode": "halted"}, headers=auth(station))
    assert r.status_code == 200 and r.json()["mode"] == "halted"
    try:
        station.wait(lambda: client.get("/api/v1/status").json()["state"] == "halted", 30, "halted")
        halted_at = time.time_ns()
        station.wait(
            lambda: any(
                row["failsafe_reason"] == "halted"
                for row in client.get("/api/v1/verdicts", params={"since": _iso(halted_at)}).json()["items"]
            ),
            what="a FAILSAFE halted verdict",
        )
    finally:
        r = client.put("/api/v1/mode", json={"mode": "running"}, headers=auth(station))
        assert r.status_code == 200 and r.json()["mode"] == "running"
    assert [c["what"] for c in changes(client)[:2]] == ["mode", "mode"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/evidence/../../../../etc/passwd",
        "/api/v1/evidence/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/v1/evidence/%2e%2e/image",
        "/api/v1/evidence/0000000000000000-0000-00000000/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/evidence/0000000000000000-0000-00000000/image",
        "/api/v1/evidence/..%252F..%252Fetc%252Fpasswd/image",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/verdict/..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_path_traversal_never_serves_a_file(station: Station, path: str) -> None:
    u = urlparse(station.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path)  # sent as written: no client-side normalisation
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert b"root:" not in body
    assert 400 <= r.status < 500 or b"not a verdict id" in body, (path, r.status)


def test_other_host_names_are_refused(station: Station) -> None:
    """A DNS-rebinding page (another name resolving to 127.0.0.1) gets nothing from a loopback station."""
    u = urlparse(station.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/api/v1/status", headers={"Host": "attacker.example"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 400 and b"running" not in body
    assert httpx.get(f"http://localhost:{u.port}/healthz", timeout=30).status_code == 200
