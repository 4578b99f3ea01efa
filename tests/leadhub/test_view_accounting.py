"""``leadhub view`` reads the view straight from SQL, so it accounts each read itself: a record
on ``lead.audit.access`` before anything is printed, fail-closed like the staff API."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from consumers.audit.kafka_log import TopicReader
from consumers.store import RowChange, ViewStore
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import new_participant_id

pytestmark = pytest.mark.integration


def _seed(database_url: str, recipient: str, participant: str) -> list[str]:
    store = ViewStore(database_url)
    store.create_schema()
    ids = [str(uuid.uuid4()) for _ in range(2)]
    rows = [{"event_id": event_id, "type": "ContactLogged", "participant_id": participant,
             "occurred_at": f"2026-03-0{index + 1}T10:00:00Z", "source_partner": "harbor-cm",
             "fields": {"contact_method": "OUTREACH"}, "categories": ["CONTACT"],
             "consent_ids": ["c-7"] if index else [], "notice": None}
            for index, event_id in enumerate(ids)]
    store.apply([RowChange(recipient, row["event_id"], row) for row in rows], {})
    store.close()
    return ids


def _access_records(kafka: KafkaConnection, topics: TopicNames) -> list[dict[str, Any]]:
    with TopicReader(kafka, topics.audit_access) as reader:
        return [json.loads(record.value) for record in reader.read(reader.end_offsets())]


def test_a_direct_read_is_recorded_before_it_is_printed(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'view.sqlite'}"
    hub.env["LEADHUB_DATABASE_URL"] = database_url
    participant = new_participant_id()
    event_ids = _seed(database_url, "harbor-cm", participant)

    shown = hub.leadhub("view", "--as", "harbor-cm", "--purpose", "care_coordination",
                        "--operator", "jdoe", "--json")
    assert shown.returncode == 0, shown.stderr
    assert sorted(row["event_id"] for row in json.loads(shown.stdout)) == sorted(event_ids)
    [record] = _access_records(kafka, topics)
    assert record["user"] == "operator:jdoe" and record["partner"] == "harbor-cm"
    assert record["purpose"] == "care_coordination"
    assert record["endpoint"] == "cli:leadhub view"
    assert sorted(record["event_ids"]) == sorted(event_ids)
    assert record["participant_ids"] == [participant] and record["consent_ids"] == ["c-7"]


def test_no_purpose_a_wrong_purpose_or_no_access_log_shows_nothing(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'view.sqlite'}"
    hub.env["LEADHUB_DATABASE_URL"] = database_url
    _seed(database_url, "harbor-cm", new_participant_id())

    missing = hub.leadhub("view", "--as", "harbor-cm", "--json")
    assert missing.returncode == 2 and "--purpose" in missing.stderr and not missing.stdout
    wrong = hub.leadhub("view", "--as", "harbor-cm", "--purpose", "prosecution_decision")
    assert wrong.returncode == 2 and "care_coordination" in wrong.stderr and not wrong.stdout
    hub.env["LEADHUB_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"  # the access log cannot be written
    closed = hub.leadhub("view", "--as", "harbor-cm", "--purpose", "care_coordination",
                         "--json", timeout=120)
    assert closed.returncode == 1, closed.stderr
    assert closed.stdout == "" and "Traceback" not in closed.stderr
    hub.env["LEADHUB_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    assert _access_records(kafka, topics) == []
