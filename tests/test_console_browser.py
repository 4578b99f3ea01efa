"""The staff console in a real browser: headless Chromium from Debian driven by Selenium.

Walks sign-in (with TOTP for the police), the caseload's filter and search, the person page,
recording a contact, the deadlines page and sign-out; checks CSRF-less posts, session expiry
on the app's clock and lock-out; runs axe-core on every page (no serious or critical
violation) and saves a screenshot of each page to docs/screenshots/. Chromium and
chromedriver come from Debian (``apt-get install chromium chromium-driver``; ``make test``
installs them), axe-core from npm into a cache directory. Outside CI a missing tool skips
with a message; under CI=true it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.console_seed import HARBOR_LOCAL, MISSED, Console

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE_DIR = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "leadhub" / "axe"
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _axe_script() -> str:
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            _missing("npm is not installed: cannot fetch axe-core for the accessibility check")
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(npm), "install", "--no-audit", "--no-fund", "--silent",
                               "--prefix", str(AXE_DIR), "axe-core@4"], capture_output=True,
                              text=True, timeout=300, check=False)
        if done.returncode != 0 or not AXE.exists():
            _missing(f"npm could not install axe-core: {done.stderr[-300:]}")
    return AXE.read_text(encoding="utf-8")


class Served:
    """The console app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, console: Console) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(console.app, host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def console() -> Console:
    return Console()


@pytest.fixture(scope="module")
def served(console: Console) -> Iterator[Served]:
    serving = Served(console)
    yield serving
    serving.stop()


@pytest.fixture(scope="module")
def axe() -> str:
    return _axe_script()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _missing("chromium and chromium-driver are not installed (apt-get install -y chromium "
                 "chromium-driver; make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="leadhub-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def check_page(driver: Any, axe: str, shot: str | None = None) -> None:
    """No serious or critical axe-core violation; save a screenshot when named."""
    driver.execute_script(axe)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));")
    bad = [(v["id"], v.get("help")) for v in result if v.get("impact") in ("serious",
                                                                           "critical")]
    assert bad == [], f"{driver.current_url}: {bad}"
    if shot:
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{shot}.png"))


def fill(driver: Any, values: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        element = driver.find_element(By.ID, name)
        element.clear()
        element.send_keys(value)


def follow(driver: Any, element: Any) -> None:
    """Click a link or button and wait until the next page has replaced this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    # Mark this document; the next one starts without the mark. (Waiting for the old <html>
    # to go stale races with Chromium, which may answer "node does not belong to the
    # document" instead of a stale element while the page is being replaced.)
    driver.execute_script("window.__leadhubLeaving = true;")
    element.click()
    WebDriverWait(driver, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return window.__leadhubLeaving !== true && document.readyState === 'complete';"))


def submit(driver: Any, selector: str) -> None:
    """Click the submit button ``selector`` names and wait for the next page."""
    from selenium.webdriver.common.by import By

    follow(driver, driver.find_element(By.CSS_SELECTOR, selector))


def sign_in(driver: Any, served: Served, user: str, password: str, code: str = "") -> None:
    driver.get(served.url + "/sign-in")
    fill(driver, {"user": user, "password": password, "code": code})
    submit(driver, "main form button[type=submit]")


def choose_purpose(driver: Any) -> None:
    submit(driver, "main form button[type=submit]")


def test_case_manager_walkthrough(console: Console, served: Served, browser: Any,
                                  axe: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(served.url + "/sign-in")
    check_page(browser, axe, "sign-in")
    sign_in(browser, served, "ana", console.ana.password)
    assert browser.current_url.endswith("/purpose")
    check_page(browser, axe, "purpose")
    choose_purpose(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Caseload"
    check_page(browser, axe, "caseload")
    browser.find_element(By.ID, "missed").click()
    submit(browser, "form[aria-label='Filter the caseload'] button")
    assert MISSED in browser.page_source and "overdue" in browser.page_source
    browser.find_element(By.ID, "mine").click()  # ana is MISSED's case manager
    Select(browser.find_element(By.ID, "sort")).select_by_value("deadline")
    submit(browser, "form[aria-label='Filter the caseload'] button")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tbody a")] == [MISSED]
    fill(browser, {"q": HARBOR_LOCAL})
    submit(browser, "form[role=search] button")
    links = browser.find_elements(By.CSS_SELECTOR, "tbody a")
    assert [a.text for a in links] == [MISSED]
    check_page(browser, axe, "search")
    follow(browser, links[0])
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Participant {MISSED}"
    assert "You do not have access to other data about this person" in browser.page_source
    assert browser.find_element(By.ID, "consents-heading").text == "Consents"
    check_page(browser, axe, "person")
    follow(browser, browser.find_element(By.LINK_TEXT, "Record a contact"))
    check_page(browser, axe, "record-contact")
    Select(browser.find_element(By.ID, "contact_method")).select_by_value("IN_PERSON")
    browser.find_element(By.ID, "successful").click()
    fill(browser, {"duration_minutes": "25"})
    sent = len(console.inbound.sent)
    submit(browser, "main form button[type=submit]")
    assert "was accepted" in browser.find_element(By.ID, "recorded").text
    partner, event = console.inbound.sent[sent]
    assert (partner, event.type, event.participant_id) == ("harbor-cm", "ContactLogged",
                                                           MISSED)
    assert event.payload["contact_method"] == "IN_PERSON" and event.payload["successful"]
    browser.get(served.url + "/record/ConsentGranted?participant_id=" + MISSED)
    check_page(browser, axe, "record-consent")
    browser.get(served.url + "/deadlines")
    Select(browser.find_element(By.ID, "status")).select_by_value("all")
    submit(browser, "main form button")
    check_page(browser, axe, "deadlines")
    status = browser.execute_script(
        "return fetch('/record/ContactLogged', {method: 'POST', body: new URLSearchParams("
        "{participant_id: arguments[0], contact_method: 'PHONE'})}).then(r => r.status)",
        MISSED)
    assert status == 403 and len(console.inbound.sent) == sent + 1
    submit(browser, "form[action='/sign-out'] button")
    assert "You are signed out" in browser.page_source
    browser.get(served.url + "/")
    assert browser.current_url.endswith("/sign-in")
    for path in ("/docs", "/redoc"):
        browser.get(served.url + path)
        time.sleep(1.5)
        assert "leadhub API" in browser.page_source


def test_police_totp_no_clinical_rows_and_expiry(console: Console, served: Served,
                                                 browser: Any, axe: str) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served, "pat", console.pat.password, "")
    assert "not right" in browser.find_element(By.ID, "sign-in-error").text
    sign_in(browser, served, "pat", console.pat.password, console.code(console.pat, -30))
    choose_purpose(browser)
    people = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR,
                                                                       "tbody a")]
    assert people, browser.page_source[-1500:]
    for href in people[:8]:
        browser.get(href)
        meta = " ".join(m.text for m in browser.find_elements(By.CSS_SELECTOR, "p.meta"))
        assert not any(c in meta for c in ("sud treatment", "mental health", "medical"))
        assert not browser.find_elements(By.CSS_SELECTOR, ".part2-notice")
    check_page(browser, axe, "person-police")
    start = console.now
    try:
        console.now = start + timedelta(minutes=16)
        browser.get(served.url + "/")
        assert browser.current_url.endswith("/sign-in")
    finally:
        console.now = start


def test_lock_out_in_the_browser(console: Console, served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    issued = console.users.create("sam", "cedar-housing")
    for _ in range(5):
        sign_in(browser, served, "sam", "not the password")
    sign_in(browser, served, "sam", issued.password)
    assert browser.find_elements(By.ID, "sign-in-error")
    assert console.users.get("sam").locked
