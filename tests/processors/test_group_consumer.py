"""The group consumer's close on the real broker: the revocation is served before librdkafka's
``close``, and a member closed cleanly leaves its group, static or not."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from leadhub.topics_admin import create_topics
from processors.group_consumer import SESSION_TIMEOUT_MS, GroupConsumer
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE

pytestmark = pytest.mark.integration

PARTITIONS = 4


class CloseWatch:
    """Stands in front of librdkafka's consumer: notes when ``close`` begins."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.closing = False

    def close(self) -> None:
        self.closing = True
        self._consumer.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class Revocations:
    """A rebalance listener that records, for each revocation, whether ``close`` had begun."""

    def __init__(self) -> None:
        self.watch: CloseWatch | None = None
        self.inside_close: list[bool] = []

    def assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        pass

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        self.inside_close.append(self.watch is not None and self.watch.closing)


@pytest.fixture
def members(kafka: KafkaConnection,
            topics: TopicNames) -> Iterator[list[tuple[GroupConsumer, Revocations]]]:
    create_topics(kafka, topics, SITE, PARTITIONS)
    made: list[tuple[GroupConsumer, Revocations]] = []
    for instance in ("a", "b"):
        member = GroupConsumer(kafka.librdkafka_config(), f"{topics.prefix}close-test",
                               [topics.events], step="test", instance_id=instance,
                               max_poll_interval_ms=60_000)
        listener = Revocations()
        listener.watch = member._consumer = CloseWatch(member._consumer)  # type: ignore[assignment]
        member.subscribe(listener)
        made.append((member, listener))
    yield made
    for member, _ in made:
        if not member._closing:
            member.close()


def _held(member: GroupConsumer) -> set[int]:
    return {tp.partition for tp in member.assignment()}


def _poll_until(done: Any, *polled: GroupConsumer, timeout_s: float, what: str) -> float:
    began = time.monotonic()
    while not done():
        assert time.monotonic() - began < timeout_s, f"{what}: not within {timeout_s} s"
        for member in polled:
            member.poll(10, 0.05)
    return time.monotonic() - began


def test_a_member_closed_cleanly_leaves_at_once_and_was_revoked_before_close(
    members: list[tuple[GroupConsumer, Revocations]],
) -> None:
    (first, first_heard), (second, _) = members
    _poll_until(lambda: _held(first) and _held(second), first, second, timeout_s=60,
                what="the two members sharing the partitions")

    revocations_before = len(first_heard.inside_close)
    began = time.monotonic()
    first.close()
    closed_in = time.monotonic() - began
    moved_in = _poll_until(lambda: _held(second) == set(range(PARTITIONS)), second,
                           timeout_s=60, what="the second member taking every partition")

    # Served in a poll before librdkafka's close, where a revocation could hang for ever.
    assert first_heard.inside_close[revocations_before:] == [False]
    assert closed_in < 5.0
    # It left the group: its partitions did not wait for its session to expire.
    assert closed_in + moved_in < SESSION_TIMEOUT_MS / 1000
