"""A ConsentGranted marked Part 2 that lacks a 42 CFR § 2.31 element is refused at the door:
dead-lettered by the validator (``INVALID_FIELD``, the field path in ``lead.message``) and
answered 400 by the HTTP gateway with the same field path. Old (v1) consents still decode."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.ingest import MemoryInbound
from processors.validate import Accepted, DeadLetter, validate_inbound
from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import Event, event_to_json
from schemas.topics import TopicNames
from tests.factories import SITE

with warnings.catch_warnings():  # starlette's note about httpx2, at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

CATALOG = load_catalog()
TOPICS = TopicNames()
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
PARTICIPANT = "p-0123456789abcdef"
AVRO = "application/vnd.leadhub.avro"

COMPLETE: dict[str, Any] = {
    "consent_id": "c-part2-1",
    "recipients": ["harbor-cm", "role:defender"],
    "categories": ["SUD_TREATMENT"],
    "purposes": ["care_coordination", "legal_defense"],
    "valid_from": T0,
    "expires_at": T0 + timedelta(days=180),
    "exceptions": [],
    "part2": True,
    "disclosing_programs": ["riverbend-sud"],
    "expires_on_event": None,
    "form_sha256": "ab" * 32,
}

#: (what is missing, payload changes, the field path named)
LACKING = [
    ("recipients", {"recipients": []}, "payload.recipients"),
    ("disclosing program", {"disclosing_programs": []}, "payload.disclosing_programs"),
    ("a well-formed disclosing program", {"disclosing_programs": ["Riverbend Recovery"]},
     "payload.disclosing_programs[0]"),
    ("expiry", {"expires_at": None, "expires_on_event": None}, "payload.expires_at"),
]


def grant(**changes: Any) -> Event:
    return Event(str(uuid.uuid4()), "ConsentGranted", PARTICIPANT, T0, {**COMPLETE, **changes})


def v1_grant(part2: bool) -> bytes:
    """A ConsentGranted written with the version-1 schema (no Part 2 elements)."""
    payload = {**COMPLETE, "part2": part2, "disclosing_programs": [], "expires_on_event": None}
    return encode(Event(str(uuid.uuid4()), "ConsentGranted", PARTICIPANT, T0, payload),
                  CATALOG, version=1)


def validate(value: bytes) -> Accepted | DeadLetter:
    return validate_inbound(topic=TOPICS.inbound("harbor-cm"), partition=0, offset=7,
                            key=PARTICIPANT.encode(), value=value, received_at=T0,
                            topics=TOPICS, site=SITE, catalog=CATALOG)


@pytest.mark.parametrize(("changes", "path"), [case[1:] for case in LACKING],
                         ids=[case[0] for case in LACKING])
def test_the_validator_dead_letters_a_part2_consent_lacking_an_element(
    changes: dict[str, Any], path: str
) -> None:
    value = encode(grant(**changes), CATALOG)
    outcome = validate(value)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "INVALID_FIELD"
    assert outcome.value == value  # the raw bytes, as for every dead letter
    headers = dict(outcome.headers)
    assert headers["lead.reason"] == b"INVALID_FIELD"
    assert f"{path}:".encode() in headers["lead.message"]
    assert b"Riverbend Recovery" not in headers["lead.message"]  # never a value


def test_the_validator_accepts_a_complete_part2_consent_and_an_ordinary_one() -> None:
    assert isinstance(validate(encode(grant(), CATALOG)), Accepted)
    on_exit = grant(expires_at=None, expires_on_event="PROGRAM_EXIT")
    assert isinstance(validate(encode(on_exit, CATALOG)), Accepted)
    ordinary = grant(part2=False, disclosing_programs=[], expires_at=None, categories=["HOUSING"])
    assert isinstance(validate(encode(ordinary, CATALOG)), Accepted)


def test_a_v1_consent_decodes_and_one_marked_part2_is_refused_for_its_missing_program() -> None:
    ordinary = v1_grant(part2=False)
    decoded = decode(ordinary, CATALOG)
    assert decoded.payload["disclosing_programs"] == []
    assert decoded.payload["expires_on_event"] is None
    assert isinstance(validate(ordinary), Accepted)
    outcome = validate(v1_grant(part2=True))
    assert isinstance(outcome, DeadLetter) and outcome.reason == "INVALID_FIELD"
    assert b"payload.disclosing_programs:" in dict(outcome.headers)["lead.message"]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, MemoryInbound, dict[str, str]]]:
    inbound = MemoryInbound()
    config = ApiConfig(f"sqlite:///{tmp_path / 'v.sqlite'}", "127.0.0.1:1")
    app = create_api(config, site=SITE, access_log=MemoryAccessLog(), inbound=inbound)
    key = app.state.context.credentials.create("harbor-cm", "partner").secret
    with TestClient(app) as http:
        yield http, inbound, {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("changes", "path"), [case[1:] for case in LACKING],
                         ids=[case[0] for case in LACKING])
def test_the_gateway_answers_400_with_the_field_path(
    gateway: Any, changes: dict[str, Any], path: str
) -> None:
    http, inbound, auth = gateway
    event = grant(**changes)
    as_json = http.post("/v1/events", json=event_to_json(event), headers=auth)
    as_avro = http.post("/v1/events", content=encode(event, CATALOG),
                        headers={**auth, "Content-Type": AVRO})
    for response in (as_json, as_avro):
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["field_path"]) == ("INVALID_FIELD", path)
        assert "Riverbend Recovery" not in response.text
    assert inbound.sent == []


def test_the_gateway_refuses_a_v1_part2_consent_and_takes_complete_ones_in_a_batch(
    gateway: Any
) -> None:
    http, inbound, auth = gateway
    old = http.post("/v1/events", content=v1_grant(part2=True),
                    headers={**auth, "Content-Type": AVRO})
    assert old.status_code == 400
    assert old.json()["error"]["field_path"] == "payload.disclosing_programs"
    good, bad = grant(), grant(disclosing_programs=[])
    batch = http.post("/v1/events:batch", json=[event_to_json(good), event_to_json(bad)],
                      headers=auth)
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert first["status"] == 202
    assert second["status"] == 400
    assert second["error"]["field_path"] == "payload.disclosing_programs"
    assert [e.event_id for _, e in inbound.sent] == [good.event_id]
