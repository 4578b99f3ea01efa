"""The console end to end on the real broker, in a real browser: what a case manager records
through the console's forms in headless Chromium goes through the validator and the projector
into another partner's view, and a revocation recorded the same way takes it out of that
partner's console again.

harbor-cm's user (ana, in one Chromium session) records a case-manager assignment, a contact and
a consent naming the mental health clinic northside-mh (PROGRAM_STATUS, purpose treatment, with
the signed form uploaded: the site gives that role PROGRAM_STATUS only with consent). The
clinic's user (mo, in a second session) then finds the participant in the caseload and the
contact on the person page; after the revocation the participant's page is a 404 to them that
reads exactly like the page of a person nobody knows. The app is the one ``leadhub serve``
builds (real KafkaInbound and Kafka access log, connecting as the broker's ``leadhub-api``
principal), served by uvicorn on a loopback port. axe-core checks every kind of page visited.
SQLite only: the view database's dialect is covered elsewhere, and this test is about the path.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kafka import KafkaConsumer
from sqlalchemy import select

from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.tables import event_authors
from consumers.console.web import users_of
from leadhub.kafka_access import principal
from leadhub.kafka_credentials import CredentialStore
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.browser import (
    axe_script,
    check_page,
    choose_purpose,
    chromium,
    fill,
    follow,
    serving,
    sign_in,
    status,
    submit,
    visible_text,
)
from tests.console_seed import CSRF
from tests.factories import SITE, new_participant_id

pytestmark = pytest.mark.integration

CLINIC = "northside-mh"
MANAGER_NAME = "A. Rivera"
#: How long a page is reloaded waiting for the hub to project what was just recorded.
PROJECTED_WITHIN_S = 90.0


def api_connection(kafka: KafkaConnection) -> KafkaConnection:
    """The ``leadhub-api`` principal of the local broker (an unsecured broker: as is)."""
    store = CredentialStore(Path(os.environ["LEADHUB_KAFKA_CREDENTIALS_DIR"]))
    found = store.connection(kafka.bootstrap, principal("api"))
    if found is None:
        assert not kafka.secured, "the broker is secured but has no leadhub-api password"
        return kafka
    return found


def record(driver: Any, values: dict[str, str]) -> str:
    """Fill the recording form the browser shows with ``values`` (by field id) and submit it;
    the recorded event's id, from the confirmation page."""
    from selenium.webdriver.common.by import By

    fill(driver, values)
    submit(driver, "main form button[type=submit]")
    problems = driver.find_elements(By.ID, "form-problem")
    assert not problems, problems[0].text
    assert "was accepted" in driver.find_element(By.ID, "recorded").text
    return parse_qs(urlsplit(driver.current_url).query)["event_id"][0]


def minute(at: datetime) -> str:
    """An instant as a datetime-local field holds it (UTC)."""
    return at.strftime("%Y-%m-%dT%H:%M")


def caseload(driver: Any) -> list[str]:
    """The participant ids listed on the caseload page the browser shows."""
    from selenium.webdriver.common.by import By

    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "tbody td:first-child a")]


def heading(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "h1").text)


def reload_until(driver: Any, holds: Any, what: str) -> None:
    """Reload the page until ``holds(driver)``; fail after PROJECTED_WITHIN_S."""
    deadline = time.monotonic() + PROJECTED_WITHIN_S
    while not holds(driver):
        if time.monotonic() > deadline:
            pytest.fail(f"the page did not show {what} in {PROJECTED_WITHIN_S:.0f}s")
        time.sleep(0.3)
        driver.refresh()


def consent_panel(driver: Any, consent_id: str) -> tuple[str, str]:
    """(the heading, the whole text) of the consent's section of the person page; ("", "")
    while the page has none."""
    from selenium.webdriver.common.by import By

    for section in driver.find_elements(By.CSS_SELECTOR, "section.consent"):
        title = section.find_element(By.TAG_NAME, "h3")
        if title.text.startswith(f"Consent {consent_id} "):
            return str(title.text), str(section.text)
    return "", ""


def access_records(kafka: KafkaConnection, topics: TopicNames, wanted: Any,
                   timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """The lead.audit.access records so far, read until ``wanted(records)`` holds."""
    consumer = KafkaConsumer(topics.audit_access, **kafka.client_options(),
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted(records) and time.monotonic() < deadline:
            records += [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    return records


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_console_records_reach_another_partner_and_a_revocation_takes_them_back(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any,
        database_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    axe = axe_script()
    started = time.monotonic()
    hub.start("validator")
    hub.start("projector")
    app = create_api(ApiConfig(database_url, api_connection(kafka),
                               topic_prefix=topics.prefix), site=SITE)
    users = users_of(app.state.context)
    ana = users.create("ana", "harbor-cm", display_name=MANAGER_NAME)
    mo = users.create("mo", CLINIC)
    p = new_participant_id()
    now = datetime.now(UTC)
    consent_id = f"c-{uuid.uuid4().hex[:12]}"
    signed_form = tmp_path / "consent.pdf"
    signed_form.write_bytes(b"%PDF-1.4 signed")
    with serving(app) as console, chromium() as manager, chromium() as clinic:
        sign_in(manager, console.url, "ana", ana.password)
        check_page(manager, axe)
        choose_purpose(manager, "care_coordination")
        assert heading(manager) == "Caseload"
        follow(manager, manager.find_element(By.LINK_TEXT, "Record"))
        follow(manager, manager.find_element(By.LINK_TEXT, "CaseManagerAssigned"))
        check_page(manager, axe)
        ids = [record(manager, {"participant_id": p, "case_manager": MANAGER_NAME,
                                "agency": "Harbor"})]
        check_page(manager, axe)
        follow(manager, manager.find_element(By.PARTIAL_LINK_TEXT, "Back to participant"))
        reload_until(manager, lambda d: heading(d) == f"Participant {p}",
                     "ana the participant she recorded")
        follow(manager, manager.find_element(By.LINK_TEXT, "Record a contact"))
        assert manager.find_element(By.ID, "participant_id").get_attribute("value") == p
        check_page(manager, axe)
        ids.append(record(manager, {"contact_method": "PHONE", "successful": "yes",
                                    "duration_minutes": "10"}))
        follow(manager, manager.find_element(By.PARTIAL_LINK_TEXT, "Back to participant"))
        follow(manager, manager.find_element(By.LINK_TEXT, "Record a consent"))
        check_page(manager, axe)
        ids.append(record(manager, {
            "consent_id": consent_id, "recipients": CLINIC, "categories": "PROGRAM_STATUS",
            "purposes": "treatment", "valid_from": minute(now - timedelta(days=1)),
            "form_sha256": str(signed_form)}))  # exceptions: the form's "[]"

        def clinic_types() -> set[str]:
            return {r["type"] for r in live_view.rows(CLINIC, p)}

        live_view.wait_for(lambda: {"ContactLogged", "CaseManagerAssigned"} <= clinic_types(),
                           what="(the clinic sees the contact under the consent)")
        seen_at = time.monotonic() - started
        assert "ConsentGranted" not in clinic_types()  # CONSENT: never for mental_health

        sign_in(clinic, console.url, "mo", mo.password)
        choose_purpose(clinic, "treatment")
        assert p in caseload(clinic)
        check_page(clinic, axe)
        follow(clinic, clinic.find_element(By.LINK_TEXT, p))
        assert status(clinic) == 200 and heading(clinic) == f"Participant {p}"
        timeline = [h.text for h in clinic.find_elements(By.CSS_SELECTOR, "section.row h3")]
        assert "Contact logged" in timeline and "Case manager assigned" in timeline
        assert not clinic.find_elements(By.ID, "consents-heading")  # may not see consents
        check_page(clinic, axe)

        follow(manager, manager.find_element(By.LINK_TEXT, "Caseload"))
        fill(manager, {"mine": "yes"})
        submit(manager, "form[aria-label='Filter the caseload'] button")
        assert caseload(manager) == [p]
        follow(manager, manager.find_element(By.LINK_TEXT, p))
        reload_until(manager, lambda d: consent_panel(d, consent_id)[0] != "",
                     "ana the consent")
        title, panel = consent_panel(manager, consent_id)
        assert title == f"Consent {consent_id} active"
        badge = manager.find_element(By.CSS_SELECTOR, "section.consent h3 .badge")
        assert "state-active" in str(badge.get_attribute("class")).split()
        assert "Northside Behavioral Health Clinic (northside-mh)" in panel
        check_page(manager, axe)

        follow(manager, manager.find_element(By.LINK_TEXT, "Record a revocation"))
        check_page(manager, axe)
        ids.append(record(manager, {"consent_id": consent_id}))
        live_view.wait_for(lambda: not live_view.rows(CLINIC, p),
                           what="(the revocation took the clinic's rows)")
        live_view.wait_for(lambda: "ConsentRevoked" in {
            r["type"] for r in live_view.rows("harbor-cm", p)}, what="(harbor's own row)")
        revoked_at = time.monotonic() - started

        def answer(participant_id: str) -> tuple[int, str, str]:
            """mo's person page of ``participant_id``: status, visible text, markup without
            the CSRF token."""
            clinic.get(f"{console.url}/participants/{participant_id}")
            return (status(clinic), visible_text(clinic),
                    CSRF.sub("", clinic.page_source))

        gone = answer(p)
        check_page(clinic, axe)
        nobody = answer(new_participant_id())
        assert gone[0] == nobody[0] == 404
        assert gone[1] == nobody[1] and p not in gone[1]
        assert gone[2] == nobody[2]
        follow(clinic, clinic.find_element(By.LINK_TEXT, "Back to the caseload"))
        assert p not in caseload(clinic)

        follow(manager, manager.find_element(By.PARTIAL_LINK_TEXT, "Back to participant"))
        reload_until(manager, lambda d: consent_panel(d, consent_id)[0].endswith(" revoked"),
                     "ana the consent revoked")
        badge = manager.find_element(By.CSS_SELECTOR, "section.consent h3 .badge")
        assert "state-revoked" in str(badge.get_attribute("class")).split()
        check_page(manager, axe)

    engine = app.state.context.credentials.engine
    with engine.connect() as connection:
        authors = connection.execute(select(
            event_authors.c.event_id, event_authors.c.user_name,
            event_authors.c.published_at)).all()
    assert {(e, u) for e, u, at in authors if at is not None} == {(e, "ana") for e in ids}

    def clinic_reads(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r["user"] == "mo"
                and r["endpoint"] == "console /participants/{participant_id}"]

    reads = clinic_reads(access_records(kafka, topics, lambda rs: len(clinic_reads(rs)) >= 3))
    assert [r["participant_ids"] for r in reads] == [[p], [], []]  # then the two 404s
    assert {(r["partner"], r["purpose"]) for r in reads} == {(CLINIC, "treatment")}
    print(f"\nclinic saw the contact after {seen_at:.1f}s; rows gone after {revoked_at:.1f}s; "
          f"test {time.monotonic() - started:.1f}s")
