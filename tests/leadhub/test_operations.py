"""What an operator sees: Prometheus metrics of a step, and ``leadhub status`` on a real hub."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumers.live_projector import ProjectorCounters
from leadhub.metrics import StepCollector
from processors.kafka_validator import ValidatorCounters
from producers.sdk import PartnerPublisher
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import new_participant_id

CATALOG = load_catalog()


def _scrape(step: str, counters: Any) -> str:
    registry = CollectorRegistry()
    registry.register(StepCollector(step, counters))
    return generate_latest(registry).decode()


def test_projector_metrics_name_records_dead_letters_batches_and_lag() -> None:
    counters = ProjectorCounters(records=120, batches=3, rollbacks=1, fenced=2,
                                 dead_letters_by_reason={"EVENT_ID_REUSED": 1},
                                 batch_seconds=0.5, lag={0: 7, 1: 0},
                                 state_reads={"cache": 90, "head": 25, "whole": 5})
    text = _scrape("project", counters)
    assert 'leadhub_records_total{step="project"} 120.0' in text
    assert 'leadhub_batches_total{step="project"} 3.0' in text
    assert 'leadhub_rollbacks_total{step="project"} 1.0' in text
    assert 'leadhub_fenced_total{step="project"} 2.0' in text
    assert 'leadhub_dead_letters_total{reason="EVENT_ID_REUSED",step="project"} 1.0' in text
    assert 'leadhub_batch_seconds_sum{step="project"} 0.5' in text
    assert 'leadhub_lag_records{partition="0",step="project"} 7.0' in text
    assert 'leadhub_state_reads_total{source="head",step="project"} 25.0' in text


def test_validator_metrics_count_accepted_and_rejected_records() -> None:
    counters = ValidatorCounters(accepted=10, dead_letters_by_reason={"TOO_LARGE": 2},
                                 batches=2, aborts=1)
    text = _scrape("validate", counters)
    assert 'leadhub_records_total{step="validate"} 12.0' in text
    assert 'leadhub_rollbacks_total{step="validate"} 1.0' in text
    assert 'leadhub_dead_letters_total{reason="TOO_LARGE",step="validate"} 1.0' not in text
    assert 'leadhub_dead_letters_total{reason="TOO_LARGE",step="validate"} 2.0' in text


@pytest.mark.integration
def test_status_shows_nothing_behind_once_the_hub_caught_up(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any) -> None:
    p = new_participant_id()
    events = [Event(str(uuid.uuid4()), "ContactLogged", p,
                    datetime(2026, 11, 2, 9, i, tzinfo=UTC),
                    {"contact_method": "OUTREACH", "successful": True}) for i in range(5)]
    with PartnerPublisher("harbor-cm", kafka, catalog=CATALOG,
                          topics=topics) as publisher:
        publisher.publish_many(events)
    before = hub.leadhub("status", "--json")
    assert before.returncode == 0, before.stderr
    waiting = {lag["topic"]: lag["behind"] for lag in json.loads(before.stdout)["lag"]}
    assert waiting[topics.inbound("harbor-cm")] == 5  # no validator is running yet
    hub.start("validator")
    hub.start("projector")
    live_view.wait_for(lambda: len(live_view.rows("harbor-cm", p)) == 5, what="(5 rows)")
    deadline = time.monotonic() + 60
    while True:
        done = hub.leadhub("status", "--json")
        assert done.returncode == 0, done.stderr
        lags = json.loads(done.stdout)["lag"]
        if all(lag["behind"] == 0 for lag in lags) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert {lag["step"] for lag in lags} == {"validate", "project"}
    assert all(lag["behind"] == 0 for lag in lags), lags
    cm = next(lag for lag in lags if lag["topic"] == topics.inbound("harbor-cm"))
    assert cm["end"] == 5
