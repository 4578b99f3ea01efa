"""Accounting of every staff read: one record per response on ``lead.audit.access``.

A record says who read (user, partner, purpose), when, through which endpoint, which
participants and events were disclosed, and under which consents (42 CFR § 2.24: an
intermediary lists every disclosure it made). The staff API writes the record *before* it
returns the response and waits for Kafka's ``acks=all``: if the record cannot be written, the
read fails with 503 and nothing is returned.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from consumers.api.errors import ServiceUnavailable
from processors.timefmt import format_instant
from schemas.kafka_connection import KafkaConnection


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One row (event) of one participant shown to the caller, and the consents behind it."""

    participant_id: str
    event_id: str
    consent_ids: tuple[str, ...] = ()


def disclosures_of(rows: Iterable[Mapping[str, Any]]) -> list[Disclosure]:
    """A :class:`Disclosure` per view row (its participant, event and ``consent_ids``)."""
    return [Disclosure(str(r["participant_id"]), str(r["event_id"]),
                       tuple(map(str, consents)) if (consents := r.get("consent_ids")) else ())
            for r in rows]


@dataclass(frozen=True)
class AccessRecord:
    """One staff read, as written to ``lead.audit.access`` (keyed by the recipient partner)."""

    user: str | None
    partner: str
    purpose: str | None
    at: datetime
    endpoint: str
    participant_ids: tuple[str, ...]
    disclosures: tuple[Disclosure, ...]
    key_id: str
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def event_ids(self) -> list[str]:
        """Every event id disclosed, in order, once."""
        return list(dict.fromkeys(d.event_id for d in self.disclosures))

    @property
    def consent_ids(self) -> list[str]:
        """Every consent id that justified a disclosed row, sorted, once."""
        return sorted({c for d in self.disclosures for c in d.consent_ids})

    def to_json(self) -> dict[str, Any]:
        """The JSON value of the audit message."""
        return {
            "record_id": self.record_id,
            "user": self.user,
            "partner": self.partner,
            "purpose": self.purpose,
            "at": format_instant(self.at),
            "endpoint": self.endpoint,
            "key_id": self.key_id,
            "participant_ids": list(self.participant_ids),
            "event_ids": self.event_ids,
            "consent_ids": self.consent_ids,
            "disclosures": [
                {"participant_id": d.participant_id, "event_id": d.event_id,
                 "consent_ids": list(d.consent_ids)} for d in self.disclosures
            ],
        }


class AccessLog(Protocol):
    """Port: durably record one staff read before its response is returned.

    ``record`` returns only once the record is stored; it raises :class:`ServiceUnavailable`
    otherwise, and the caller must then fail the read.
    """

    def record(self, record: AccessRecord) -> None: ...

    def close(self) -> None: ...


class MemoryAccessLog:
    """In-memory :class:`AccessLog` for unit tests; ``fail=True`` simulates an outage."""

    def __init__(self) -> None:
        self.records: list[AccessRecord] = []
        self.fail = False

    def record(self, record: AccessRecord) -> None:
        """Keep the record, or raise as a down broker would."""
        if self.fail:
            raise ServiceUnavailable("the access log is unavailable", code="AUDIT_UNAVAILABLE")
        self.records.append(record)

    def close(self) -> None:
        """Nothing to release."""


class KafkaAccessLog:
    """:class:`AccessLog` on Kafka: an idempotent ``acks=all`` kafka-python producer.

    The producer is created on first use (so the API starts while Kafka is down and answers
    503 until it is back) and dropped after a failure, to reconnect cleanly on the next read.
    """

    def __init__(self, kafka: KafkaConnection, topic: str, timeout_s: float = 5.0) -> None:
        self.kafka = kafka
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _get(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                timeout_ms = int(self.timeout_s * 1000)
                self._producer = KafkaProducer(
                    **self.kafka.client_options(), client_id="leadhub-api-audit",
                    acks="all", enable_idempotence=True, linger_ms=0,
                    bootstrap_timeout_ms=timeout_ms, max_block_ms=timeout_ms,
                    request_timeout_ms=timeout_ms, delivery_timeout_ms=2 * timeout_ms)
            return self._producer

    def record(self, record: AccessRecord) -> None:
        """Produce the record keyed by the recipient partner and wait for the broker's ack."""
        value = json.dumps(record.to_json(), separators=(",", ":"), sort_keys=True).encode()
        try:
            producer = self._get()
            producer.send(self.topic, key=record.partner.encode(), value=value).get(
                timeout=2 * self.timeout_s)
        except (KafkaError, OSError) as exc:
            self._reset()
            raise ServiceUnavailable(
                "the access record could not be written to the audit log, so nothing is "
                "returned; retry later", code="AUDIT_UNAVAILABLE") from exc

    def _reset(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=1)

    def close(self) -> None:
        """Flush and close the producer."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=self.timeout_s)
