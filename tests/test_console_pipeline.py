"""The console end to end on the real broker: what a case manager records through the console's
forms goes through the validator and the projector into another partner's view, and a
revocation recorded the same way takes it out of that partner's console again.

harbor-cm's user records a case-manager assignment, a contact and a consent naming the mental
health clinic northside-mh (PROGRAM_STATUS, purpose treatment: the site gives that role
PROGRAM_STATUS only with consent). The clinic's user then finds the participant and the
contact; after the revocation the participant is a 404 to them, byte for byte the page of a
person nobody knows. The API process is the one ``leadhub serve`` builds (real KafkaInbound
and Kafka access log) connecting as the broker's ``leadhub-api`` principal. SQLite only: the
view database's dialect is covered elsewhere, and this test is about the path.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from sqlalchemy import select

from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.tables import event_authors
from consumers.console.web import users_of
from leadhub.kafka_access import principal
from leadhub.kafka_credentials import CredentialStore
from processors.site import load_site
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.console_seed import CSRF, csrf, sign_in
from tests.factories import new_participant_id

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

SITE = load_site(Path(__file__).resolve().parent.parent / "config" / "site.example.yaml")
CLINIC = "northside-mh"
MANAGER_NAME = "A. Rivera"


def api_connection(kafka: KafkaConnection) -> KafkaConnection:
    """The ``leadhub-api`` principal of the local broker (an unsecured broker: as is)."""
    store = CredentialStore(Path(os.environ["LEADHUB_KAFKA_CREDENTIALS_DIR"]))
    found = store.connection(kafka.bootstrap, principal("api"))
    if found is None:
        assert not kafka.secured, "the broker is secured but has no leadhub-api password"
        return kafka
    return found


def record(http: Any, type_name: str, token: str, values: dict[str, str],
           files: dict[str, Any] | None = None) -> str:
    """Post a console form; the recorded event's id."""
    done = http.post(f"/record/{type_name}", data={"csrf_token": token, **values}, files=files)
    assert done.status_code == 200 and "was accepted" in done.text, done.text[-800:]
    found = re.search(r"event_id=([0-9a-f-]{36})", str(done.url))
    assert found, done.url
    return found.group(1)


def minute(at: datetime) -> str:
    """An instant as a datetime-local field sends it (UTC)."""
    return at.strftime("%Y-%m-%dT%H:%M")


def entries(html: str) -> list[str]:
    return re.findall(r'<td><a href="/participants/([^"]+)">', html)


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
        database_url: str) -> None:
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
    with TestClient(app) as manager:
        token = csrf(sign_in(manager, "ana", ana.password))
        ids = [record(manager, "CaseManagerAssigned", token, {
            "participant_id": p, "case_manager": MANAGER_NAME, "agency": "Harbor"})]
        ids.append(record(manager, "ContactLogged", token, {
            "participant_id": p, "contact_method": "PHONE", "successful": "yes",
            "duration_minutes": "10"}))
        ids.append(record(manager, "ConsentGranted", token, {
            "participant_id": p, "consent_id": consent_id, "recipients": CLINIC,
            "categories": "PROGRAM_STATUS", "purposes": "treatment",
            "valid_from": minute(now - timedelta(days=1)), "exceptions": "[]"},
            files={"form_sha256": ("consent.pdf", b"%PDF-1.4 signed", "application/pdf")}))

        def clinic_types() -> set[str]:
            return {r["type"] for r in live_view.rows(CLINIC, p)}

        live_view.wait_for(lambda: {"ContactLogged", "CaseManagerAssigned"} <= clinic_types(),
                           what="(the clinic sees the contact under the consent)")
        seen_at = time.monotonic() - started
        assert "ConsentGranted" not in clinic_types()  # CONSENT: never for mental_health

        clinic = TestClient(app)  # the app's lifespan is the manager's client's
        sign_in(clinic, "mo", mo.password, purpose="treatment")
        assert p in entries(clinic.get("/").text)
        page = clinic.get(f"/participants/{p}")
        assert page.status_code == 200
        assert "Contact logged" in page.text and "Case manager assigned" in page.text
        assert 'id="consents-heading"' not in page.text  # the clinic may not see consents

        assert entries(manager.get("/", params={"mine": "1"}).text) == [p]
        panel = manager.get(f"/participants/{p}").text
        assert f"Consent {consent_id} <span class=\"badge state-active\">active" in panel
        assert "Northside Behavioral Health Clinic (northside-mh)" in panel

        ids.append(record(manager, "ConsentRevoked", token, {
            "participant_id": p, "consent_id": consent_id}))
        live_view.wait_for(lambda: not live_view.rows(CLINIC, p),
                           what="(the revocation took the clinic's rows)")
        live_view.wait_for(lambda: "ConsentRevoked" in {
            r["type"] for r in live_view.rows("harbor-cm", p)}, what="(harbor's own row)")
        revoked_at = time.monotonic() - started

        gone = clinic.get(f"/participants/{p}")
        nobody = clinic.get(f"/participants/{new_participant_id()}")
        assert gone.status_code == nobody.status_code == 404
        assert CSRF.sub("", gone.text) == CSRF.sub("", nobody.text)
        assert p not in entries(clinic.get("/").text)
        panel = manager.get(f"/participants/{p}").text
        assert f"Consent {consent_id} <span class=\"badge state-revoked\">revoked" in panel

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
