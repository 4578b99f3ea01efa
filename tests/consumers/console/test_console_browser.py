"""The staff console in a real browser: headless Chromium from Debian driven by Selenium.

Walks sign-in (with TOTP for the police), the caseload's filter and search, the person page,
recording a contact, the deadlines page and sign-out; checks CSRF-less posts, session expiry
on the app's clock and lock-out; runs axe-core on every page (no serious or critical
violation) and saves a screenshot of each page to docs/screenshots/. At 1280x800 and at a
tablet's 768x1024 the caseload, a person page and a recording form fit the window's width with
their controls in view. The browser helpers are tests/browser.py's. Chromium and
chromedriver come from Debian (``apt-get install chromium chromium-driver``; ``make test``
installs them), axe-core from npm into a cache directory. Outside CI a missing tool skips
with a message; under CI=true it fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.browser import (
    DESKTOP,
    TABLET,
    Served,
    axe_script,
    check_page,
    choose_purpose,
    chromium,
    fill,
    follow,
    overflow,
    sign_in,
    submit,
)
from tests.console_seed import HARBOR_LOCAL, MISSED, Console


@pytest.fixture(scope="module")
def console() -> Console:
    return Console()


@pytest.fixture(scope="module")
def served(console: Console) -> Iterator[Served]:
    serving = Served(console.app)
    yield serving
    serving.stop()


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_script()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def test_case_manager_walkthrough(console: Console, served: Served, browser: Any,
                                  axe: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(served.url + "/sign-in")
    check_page(browser, axe, "sign-in")
    sign_in(browser, served.url, "ana", console.ana.password)
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

    sign_in(browser, served.url, "pat", console.pat.password, "")
    assert "not right" in browser.find_element(By.ID, "sign-in-error").text
    sign_in(browser, served.url, "pat", console.pat.password, console.code(console.pat, -30))
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
        sign_in(browser, served.url, "sam", "not the password")
    sign_in(browser, served.url, "sam", issued.password)
    assert browser.find_elements(By.ID, "sign-in-error")
    assert console.users.get("sam").locked


def assert_fits(driver: Any, selectors: list[str]) -> None:
    """The page does not scroll sideways, and each control ``selectors`` names is displayed
    and lies within the window's width (reachable without scrolling sideways)."""
    from selenium.webdriver.common.by import By

    width, inner = overflow(driver)
    assert width <= inner, f"{driver.current_url}: {width}px wide in a {inner}px window"
    for selector in selectors:
        element = driver.find_element(By.CSS_SELECTOR, selector)
        assert element.is_displayed(), f"{driver.current_url}: {selector} is hidden"
        left, right = driver.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right];",
            element)
        assert left >= 0 and right <= inner, f"{driver.current_url}: {selector} at {left}-{right}"


@pytest.mark.parametrize("size", [DESKTOP, TABLET], ids=["1280x800", "tablet-768x1024"])
def test_layout_fits_the_window(console: Console, served: Served, browser: Any, axe: str,
                                size: tuple[int, int]) -> None:
    """At 1280x800 and at a tablet's 768x1024 the caseload, a person page and a recording form
    fit the window's width with their controls in view, and axe finds no serious violation."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(*size)
    sign_in(browser, served.url, "ana", console.ana.password)
    choose_purpose(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Caseload"
    nav = ["nav[aria-label=Main] a[href='/']", "nav[aria-label=Main] a[href='/record']",
           "form[action='/sign-out'] button"]
    assert_fits(browser, [*nav, "#q", "form[role=search] button", "#status", "#sort",
                          "form[aria-label='Filter the caseload'] button", "tbody a"])
    check_page(browser, axe)
    browser.get(f"{served.url}/participants/{MISSED}")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Participant {MISSED}"
    assert_fits(browser, [*nav, "h1", "#type", "#category",
                          "form[aria-label='Filter the timeline'] button",
                          "a[href^='/record/ContactLogged']", "#consents-heading",
                          ".consent h3", ".digest"])
    check_page(browser, axe)
    browser.get(f"{served.url}/record/ConsentGranted?participant_id={MISSED}")
    fields = ["#participant_id", "#occurred_at", "#consent_id", "#recipients", "#valid_from",
              "#exceptions", "#form_sha256"]
    assert_fits(browser, [*nav, *fields, "main form button[type=submit]"])
    check_page(browser, axe)
