"""Contract suites of the API's ports: every implementation of a port passes the same tests.

One abstract class per port states what the port promises (its Protocol's docstring); each
implementation (the in-memory one the unit tests use, the Kafka one the hub runs) gets a
subclass that says only how to build it and how to read back what it stored. A fake that
drifts from the real adapter fails here, not in production.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.api.access_log import (
    AccessLog,
    AccessRecord,
    Disclosure,
    KafkaAccessLog,
    MemoryAccessLog,
)
from consumers.api.errors import ServiceUnavailable
from consumers.api.ingest import InboundPublisher, KafkaInbound, MemoryInbound
from consumers.audit.kafka_log import TopicReader
from schemas.catalog import load_catalog
from schemas.codec import decode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

CATALOG = load_catalog()
UNREACHABLE = KafkaConnection("127.0.0.1:1")


def _record() -> AccessRecord:
    participant = f"p-{uuid.uuid4().hex[:16]}"
    event_id = str(uuid.uuid4())
    return AccessRecord(user="ana", partner="harbor-cm", purpose="care_coordination",
                        at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC), endpoint="GET /v1/x",
                        participant_ids=(participant,),
                        disclosures=(Disclosure(participant, event_id, ("c-1",)),),
                        key_id="k1")


def _contact() -> Event:
    return Event(event_id=str(uuid.uuid4()), type="ContactLogged",
                 participant_id=f"p-{uuid.uuid4().hex[:16]}",
                 occurred_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
                 payload={"contact_method": "OUTREACH", "successful": True,
                          "duration_minutes": 10})


# -- AccessLog ---------------------------------------------------------------------------------

class AccessLogContract:
    """:class:`AccessLog`: ``record`` returns only once the record is stored, else raises
    ServiceUnavailable (AUDIT_UNAVAILABLE) so the caller fails the read."""

    def make(self) -> AccessLog:
        raise NotImplementedError

    def make_unavailable(self) -> AccessLog:
        raise NotImplementedError

    def stored(self, log: AccessLog) -> list[dict[str, Any]]:
        """The JSON of every record stored so far, in order."""
        raise NotImplementedError

    def test_a_record_is_stored_as_its_json_before_record_returns(self) -> None:
        log = self.make()
        first, second = _record(), _record()
        log.record(first)
        log.record(second)
        assert self.stored(log) == [first.to_json(), second.to_json()]
        log.close()

    def test_an_unavailable_log_refuses_the_record(self) -> None:
        log = self.make_unavailable()
        with pytest.raises(ServiceUnavailable) as refused:
            log.record(_record())
        assert refused.value.code == "AUDIT_UNAVAILABLE"
        assert refused.value.status == 503
        log.close()

    def test_close_twice_is_harmless(self) -> None:
        log = self.make()
        log.close()
        log.close()


class TestMemoryAccessLog(AccessLogContract):
    def make(self) -> AccessLog:
        return MemoryAccessLog()

    def make_unavailable(self) -> AccessLog:
        log = MemoryAccessLog()
        log.fail = True
        return log

    def stored(self, log: AccessLog) -> list[dict[str, Any]]:
        assert isinstance(log, MemoryAccessLog)
        return [record.to_json() for record in log.records]


@pytest.mark.integration
class TestKafkaAccessLog(AccessLogContract):
    @pytest.fixture(autouse=True)
    def _broker(self, hub: Any, kafka: KafkaConnection, topics: TopicNames) -> Iterator[None]:
        self.kafka, self.topics = kafka, topics  # ``hub`` created the topics and the ACLs
        yield

    def make(self) -> AccessLog:
        return KafkaAccessLog(self.kafka, self.topics.audit_access)

    def make_unavailable(self) -> AccessLog:
        return KafkaAccessLog(UNREACHABLE, self.topics.audit_access, timeout_s=1.0)

    def stored(self, log: AccessLog) -> list[dict[str, Any]]:
        with TopicReader(self.kafka, self.topics.audit_access) as reader:
            records = list(reader.read(reader.end_offsets()))
        records.sort(key=lambda r: (r.partition, r.offset))  # one key: one partition, in order
        return [json.loads(r.value) for r in records]


# -- InboundPublisher --------------------------------------------------------------------------

class InboundContract:
    """:class:`InboundPublisher`: ``publish`` returns once every event is acknowledged, on the
    partner's inbound topic, unchanged; else raises ServiceUnavailable (KAFKA_UNAVAILABLE)."""

    def make(self) -> InboundPublisher:
        raise NotImplementedError

    def make_unavailable(self) -> InboundPublisher:
        raise NotImplementedError

    def stored(self, inbound: InboundPublisher, partner_id: str) -> list[Event]:
        """The events on ``partner_id``'s inbound topic, as sent."""
        raise NotImplementedError

    def test_published_events_are_on_the_partners_topic_unchanged(self) -> None:
        inbound = self.make()
        events = [_contact(), _contact()]
        inbound.publish("harbor-cm", events)
        assert sorted(self.stored(inbound, "harbor-cm"), key=lambda e: e.event_id) == sorted(
            events, key=lambda e: e.event_id)
        assert self.stored(inbound, "cedar-housing") == []
        inbound.close()

    def test_an_unavailable_broker_is_refused_not_confirmed(self) -> None:
        inbound = self.make_unavailable()
        with pytest.raises(ServiceUnavailable) as refused:
            inbound.publish("harbor-cm", [_contact()])
        assert refused.value.code == "KAFKA_UNAVAILABLE"
        inbound.close()


class TestMemoryInbound(InboundContract):
    def make(self) -> InboundPublisher:
        return MemoryInbound()

    def make_unavailable(self) -> InboundPublisher:
        inbound = MemoryInbound()
        inbound.fail = True
        return inbound

    def stored(self, inbound: InboundPublisher, partner_id: str) -> list[Event]:
        assert isinstance(inbound, MemoryInbound)
        return [event for partner, event in inbound.sent if partner == partner_id]


@pytest.mark.integration
class TestKafkaInbound(InboundContract):
    @pytest.fixture(autouse=True)
    def _broker(self, hub: Any, kafka: KafkaConnection, topics: TopicNames) -> Iterator[None]:
        self.kafka, self.topics = kafka, topics
        yield

    def make(self) -> InboundPublisher:
        return KafkaInbound(self.kafka, self.topics, CATALOG)

    def make_unavailable(self) -> InboundPublisher:
        return KafkaInbound(UNREACHABLE, self.topics, CATALOG, timeout_s=1.0)

    def stored(self, inbound: InboundPublisher, partner_id: str) -> list[Event]:
        with TopicReader(self.kafka, self.topics.inbound(partner_id)) as reader:
            return [decode(record.value, CATALOG) for record in reader.read(reader.end_offsets())]
