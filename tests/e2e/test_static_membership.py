"""A step killed right after its first join comes back owning its partitions.

The steps are static members: a restarted member takes its predecessor's assignment without a
rebalance, and a restarted leader does not know it leads (docs/architecture.md "Group
membership"). The first assignment must therefore already cover every partition; one made
before the topics' metadata arrived stayed empty for good (a CI run of
tests/e2e/test_pipeline_site.py, when the steps were on kafka-python).
"""

from __future__ import annotations

import signal
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import new_participant_id, publish_as

pytestmark = pytest.mark.integration


#: What a step's log says once its group made a first assignment (processors/group_consumer.py).
FIRST_ASSIGNMENT = ("member of group",)


def _kill_after_first_join(hub: Any, step: str) -> None:
    """Start ``step``, SIGKILL it as soon as its group made a first assignment, start it
    again. On kafka-python, without the fix, this reproduced the empty assignment in every run
    (4 of 4)."""
    hub.start(step)
    deadline = time.monotonic() + 60
    while not any(mark in hub.log_tail(step, 200) for mark in FIRST_ASSIGNMENT):
        assert time.monotonic() < deadline, hub.log_tail(step)
        time.sleep(0.02)
    hub.kill(step, signal.SIGKILL)
    hub.start(step)


def _contacts(count: int) -> tuple[str, list[Event]]:
    p = new_participant_id()
    return p, [Event(str(uuid.uuid4()), "ContactLogged", p,
                     datetime(2026, 11, 2, 9, i, tzinfo=UTC),
                     {"contact_method": "OUTREACH", "successful": True}) for i in range(count)]


@pytest.mark.parametrize(("killed", "other"), [("validator", "projector"),
                                               ("projector", "validator")])
def test_a_step_killed_after_its_first_join_works_after_restart(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any, killed: str,
        other: str) -> None:
    hub.start(other)
    _kill_after_first_join(hub, killed)
    participant, events = _contacts(5)
    publish_as(kafka, topics, "harbor-cm", *events)
    live_view.wait_for(lambda: len(live_view.rows("harbor-cm", participant)) == 5,
                       timeout_s=60, what=hub.log_tail(killed))
