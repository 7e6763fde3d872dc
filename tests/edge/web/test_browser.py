"""A real headless Chromium (Debian's chromium + chromedriver, driven by Selenium) on the status
page of a running station: the counts change live, a reject's evidence opens, a threshold is
changed with the token. Screenshots are kept in build/test-artifacts/web/."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.edge.web.conftest import Station

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[3] / "build" / "test-artifacts" / "web"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="chromium/chromedriver not installed (scripts/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ei-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",  # a landscape tablet
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(cond: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = cond()
        except Exception as exc:  # an element not there yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout} s (last: {last!r})")


def number(driver: Any, element_id: str) -> int:
    text = driver.find_element("id", element_id).text.replace(",", "").replace("\u202f", "").strip()
    return int(text) if text.isdigit() else -1


def shot(driver: Any, name: str, full: bool = False) -> Path:
    path = ARTIFACTS / name
    if full:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(max(900, int(height) + 40), 4000))
    driver.save_screenshot(str(path))
    if full:
        driver.set_window_size(1280, 900)
    return path


def test_operator_sees_the_line_live_opens_evidence_and_changes_a_threshold(browser: Any, station: Station) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    d.get(station.url + "/")
    until(lambda: d.find_element(By.ID, "state").text.lower() == "running", what="state RUNNING")
    first = until(lambda: number(d, "decided") > 0 and number(d, "decided"), what="a decided count")
    later = until(lambda: number(d, "decided") > first and number(d, "decided"), what="the count to change live")
    assert later > first
    until(lambda: number(d, "n-pass") + number(d, "n-reject") + number(d, "n-failsafe") > 0, what="window counts")
    assert d.find_element(By.ID, "conn").text.endswith("live")
    # a reject with its thumbnail in the live list
    card = until(
        lambda: next(
            (
                c
                for c in d.find_elements(By.CSS_SELECTOR, "#recent a.card.REJECT")
                if c.find_elements(By.TAG_NAME, "img")
            ),
            None,
        ),
        what="a reject with its thumbnail",
    )
    health = d.find_element(By.ID, "health").text
    assert "camera line1" in health and "streaming" in health and "audit" in health
    shot(d, "01-live.png")
    shot(d, "01-live-full.png", full=True)

    # its evidence: the frame with detections and the heat map against the golden reference
    card.click()
    until(lambda: "/verdict/" in d.current_url, what="the verdict page")
    until(lambda: d.find_element(By.ID, "title").text.startswith("REJECT"), what="the verdict title")
    for img_id in ("ev-image", "ev-heat"):
        until(
            lambda i=img_id: d.execute_script(f"const e = document.getElementById('{i}'); return e && e.naturalWidth"),
            what=f"{img_id} loaded",
        )
    reasons = d.find_element(By.ID, "reasons").text
    assert "max_count" in reasons or "max_total" in reasons
    shot(d, "02-verdict.png", full=True)

    # the gallery, filtered to one defect class
    d.get(station.url + "/rejects")
    until(lambda: len(d.find_elements(By.CSS_SELECTOR, "#gallery a.card")) > 0, what="gallery cards")
    until(lambda: len(d.find_elements(By.CSS_SELECTOR, "#f-class option")) > 1, what="class filter")
    cls = d.find_elements(By.CSS_SELECTOR, "#f-class option")[1].get_attribute("value")
    d.find_element(By.ID, "f-class").send_keys(cls)
    d.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    until(lambda: f"class={cls}" in d.current_url, what="filtered gallery")
    shot(d, "03-rejects.png")

    # a threshold changed with the token: first a wrong token (refused), then the right one
    d.get(station.url + "/")
    until(lambda: d.find_element(By.ID, "min-confidence").get_attribute("value") != "", what="decision form")
    before = httpx.get(station.url + "/api/v1/decision", timeout=30).json()
    field = d.find_element(By.ID, "min-confidence")
    field.clear()
    field.send_keys("0.33")
    d.find_element(By.ID, "token").send_keys("wrong-token")
    d.find_element(By.ID, "operator").send_keys("shift-lead")
    d.find_element(By.ID, "apply").click()
    until(lambda: "not applied" in d.find_element(By.ID, "decision-msg").text, what="refusal shown")
    assert "401" in d.find_element(By.ID, "decision-msg").text
    assert httpx.get(station.url + "/api/v1/decision", timeout=30).json() == before
    token = d.find_element(By.ID, "token")
    token.clear()
    token.send_keys(station.token)
    d.find_element(By.ID, "apply").click()
    until(lambda: d.find_element(By.ID, "decision-msg").text.startswith("applied"), what="change applied")
    after = httpx.get(station.url + "/api/v1/decision", timeout=30).json()
    assert after["min_confidence"] == 0.33 and before["min_confidence"] != 0.33
    row = httpx.get(station.url + "/api/v1/changes", timeout=30).json()[0]
    assert row["what"] == "decision" and row["outcome"] == "applied" and "shift-lead" in row["who"]
    d.execute_script("document.getElementById('controls').scrollIntoView()")
    shot(d, "04-threshold-changed.png")
    d.find_element(By.ID, "revert").click()
    until(lambda: d.find_element(By.ID, "decision-msg").text.startswith("reverted"), what="reverted")
    assert httpx.get(station.url + "/api/v1/decision", timeout=30).json() == before
