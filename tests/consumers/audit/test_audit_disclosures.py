"""Accounting of disclosures: materialized rows (from the replay) and staff reads."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaProducer

from consumers.audit.disclosures import accessed
from consumers.audit.kafka_log import TopicReader
from producers.sdk import PartnerPublisher
from schemas.catalog import load_catalog
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import make_event, new_participant_id, participant_id

CATALOG = load_catalog()
T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)



def _access(participant: str, event_id: str) -> bytes:
    return json.dumps({
        "record_id": "r1", "user": "jdoe", "partner": "defender-assoc",
        "purpose": "legal_defense", "at": "2026-09-02T10:00:00Z", "endpoint": "/timeline",
        "key_id": "k", "participant_ids": [participant, participant_id("other")],
        "event_ids": [event_id, "e-other"], "consent_ids": ["c-1", "c-other"],
        "disclosures": [{"participant_id": participant, "event_id": event_id,
                         "consent_ids": ["c-1"]},
                        {"participant_id": participant_id("other"), "event_id": "e-other",
                         "consent_ids": ["c-other"]}]}).encode()


def test_access_records_are_read_per_participant_and_tolerantly() -> None:
    p1, p9 = participant_id(1), participant_id(9)
    reads, skipped = accessed(p1, [_access(p1, "e-1"), b"not json", b"{}", _access(p9, "e-9")])
    assert skipped == 1  # "{}" names no participant: not about P-1, not unreadable
    assert len(reads) == 1
    read = reads[0]
    assert (read.recipient, read.user, read.purpose) == ("defender-assoc", "jdoe",
                                                         "legal_defense")
    assert read.event_ids == ("e-1",) and read.consent_ids == ("c-1",)


@pytest.mark.integration
def test_disclosures_list_consented_rows_and_staff_reads(hub: Any, topics: TopicNames,
                                                         kafka: KafkaConnection) -> None:
    hub.start("validator")
    p = new_participant_id()
    housing = make_event("HousingStatusChanged", p, T0, status="TRANSITIONAL", provider="Cedar")
    grant = make_event("ConsentGranted", p, T0 + timedelta(hours=1), consent_id="c-1",
                   recipients=["defender-assoc"], categories=["HOUSING"],
                   purposes=["legal_defense"], valid_from=T0,
                   expires_at=T0 + timedelta(days=3650), exceptions=[], part2=False,
                   form_sha256="0" * 64)
    revoke = make_event("ConsentRevoked", p, T0 + timedelta(hours=2), consent_id="c-1")

    def validated(count: int) -> None:  # the participant's records in lead.events (its end
        deadline = time.monotonic() + 60  # offsets count ticks and commit markers too)
        while True:
            with TopicReader(kafka, topics.events) as reader:
                if sum(1 for r in reader.read(reader.end_offsets())
                       if r.key == p.encode()) >= count:
                    return
            assert time.monotonic() < deadline
            time.sleep(0.3)

    with PartnerPublisher("cedar-housing", kafka, catalog=CATALOG,
                          topics=topics) as pub:
        pub.publish(housing)
    # Validated before the consent: the validator orders nothing across partners' topics.
    validated(1)
    with PartnerPublisher("harbor-cm", kafka, catalog=CATALOG, topics=topics) as pub:
        pub.publish_many([grant, revoke])
    raw = KafkaProducer(**kafka.client_options())
    raw.send(topics.audit_access, key=b"defender-assoc", value=_access(p, housing.event_id))
    raw.send(topics.audit_access, key=b"x", value=b"\x00garbage").get(30)
    raw.close()
    validated(3)

    done = hub.leadhub("audit", "disclosures", "--participant", p, "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert listing["unreadable_access_records"] == 1
    kinds = [(d["kind"], d["recipient"]) for d in listing["disclosures"]]
    assert ("accessed", "defender-assoc") in kinds
    shared = [d for d in listing["disclosures"]
              if d["kind"] == "materialized" and d["recipient"] == "defender-assoc"]
    assert shared and shared[0]["event_ids"] == [housing.event_id]
    assert shared[0]["categories"] == ["HOUSING"] and shared[0]["consent_ids"] == ["c-1"]
    assert all(d["recipient"] != "cedar-housing" for d in listing["disclosures"]
               if d["kind"] == "materialized")  # the source's own rows are not disclosures
    assert "TRANSITIONAL" not in done.stdout  # no field values

    later = hub.leadhub("audit", "disclosures", "--participant", p, "--since",
                        "2099-01-01T00:00:00Z", "--json")
    assert json.loads(later.stdout)["disclosures"] == []
