"""Driving the staff console in headless Chromium (Debian's chromium and chromium-driver, through
Selenium), for the browser tests: an ASGI app served by uvicorn on a loopback port, a Chromium
session, axe-core, and helpers that fill and submit the console's forms.

Outside CI a missing tool skips the test with a message; under CI=true it fails it.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.factories import ROOT

SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE_DIR = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "leadhub" / "axe"
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
#: The desktop window every session starts with, and the tablet (portrait) width checked too.
DESKTOP = (1280, 800)
TABLET = (768, 1024)


def missing(message: str) -> None:
    """Fail under CI=true, else skip: a tool the browser tests need is not installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def axe_script() -> str:
    """axe-core's script, installed from npm into the cache directory on first use."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            missing("npm is not installed: cannot fetch axe-core for the accessibility check")
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(npm), "install", "--no-audit", "--no-fund", "--silent",
                               "--prefix", str(AXE_DIR), "axe-core@4"], capture_output=True,
                              text=True, timeout=300, check=False)
        if done.returncode != 0 or not AXE.exists():
            missing(f"npm could not install axe-core: {done.stderr[-300:]}")
    return AXE.read_text(encoding="utf-8")


class Served:
    """An ASGI app served by uvicorn on a free loopback port, in a thread; ``url`` answers
    once the constructor returns (the app's lifespan startup has run), until :meth:`stop`
    (which runs its lifespan shutdown)."""

    def __init__(self, app: Any) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(app: Any) -> Iterator[Served]:
    """``app`` served for the duration of the block."""
    serving = Served(app)
    try:
        yield serving
    finally:
        serving.stop()


@contextmanager
def chromium(size: tuple[int, int] = DESKTOP) -> Iterator[Any]:
    """A headless Chromium session (its own throw-away profile: no shared cookies) with a
    window of ``size``; skips (fails under CI) when Chromium or chromedriver is missing."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing("chromium and chromium-driver are not installed (apt-get install -y chromium "
                "chromium-driver; make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="leadhub-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def check_page(driver: Any, axe: str, shot: str | None = None) -> None:
    """No serious or critical axe-core violation; with ``LEADHUB_SCREENSHOTS=1`` in the
    environment, also save a screenshot of the page to docs/screenshots/ when it is named (the
    README's pictures are made this way; off by default, so a test run leaves the tree alone)."""
    driver.execute_script(axe)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));")
    bad = [(v["id"], v.get("help")) for v in result if v.get("impact") in ("serious",
                                                                           "critical")]
    assert bad == [], f"{driver.current_url}: {bad}"
    if shot and os.environ.get("LEADHUB_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{shot}.png"))


def fill(driver: Any, values: dict[str, str]) -> None:
    """Give the form fields with these ids these values, as a user would: type into text
    inputs and text areas, pick a select's option by value, tick a checkbox for a non-empty
    value (clear it for ""), give a file input the path of a file. Date and date-time inputs
    get their value set by script (typing into them depends on the browser's locale), with
    the input and change events a user's entry fires."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for name, value in values.items():
        element = driver.find_element(By.ID, name)
        kind = (element.get_attribute("type") or "").lower()
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        elif kind == "checkbox":
            if element.is_selected() != bool(value):
                element.click()
        elif kind == "file":
            element.send_keys(value)
        elif kind in ("date", "datetime-local"):
            driver.execute_script(
                "const e = arguments[0]; e.value = arguments[1];"
                "e.dispatchEvent(new Event('input', {bubbles: true}));"
                "e.dispatchEvent(new Event('change', {bubbles: true}));", element, value)
            assert element.get_attribute("value") == value, (name, value)
        else:
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
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return window.__leadhubLeaving !== true && document.readyState === 'complete';"))


def submit(driver: Any, selector: str) -> None:
    """Click the submit button ``selector`` names and wait for the next page."""
    from selenium.webdriver.common.by import By

    follow(driver, driver.find_element(By.CSS_SELECTOR, selector))


def sign_in(driver: Any, base_url: str, user: str, password: str, code: str = "") -> None:
    """Submit the sign-in form (the next page: the purpose choice, or the form again)."""
    driver.get(base_url + "/sign-in")
    fill(driver, {"user": user, "password": password, "code": code})
    submit(driver, "main form button[type=submit]")


def choose_purpose(driver: Any, purpose: str | None = None) -> None:
    """On the purpose page, choose ``purpose`` (default: the one preselected) and continue."""
    from selenium.webdriver.common.by import By

    if purpose is not None:
        driver.find_element(By.ID, f"purpose-{purpose}").click()
    submit(driver, "main form button[type=submit]")


def status(driver: Any) -> int:
    """The HTTP status of the page the browser shows (Navigation Timing's responseStatus)."""
    return int(driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].responseStatus;"))


def visible_text(driver: Any) -> str:
    """The text of the page as a reader sees it (no hidden inputs, no markup)."""
    return str(driver.execute_script("return document.body.innerText;"))


def overflow(driver: Any) -> tuple[int, int]:
    """(the document's width, the window's inner width): the page scrolls sideways when the
    first is larger."""
    widths = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth];")
    return int(widths[0]), int(widths[1])
