"""MembershipWatch: what it logs, and that it keeps a joining member's rejoin flag set."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka.structs import ConsumerGroupMetadata, MemberState, TopicPartition

from processors.membership import MembershipWatch, await_partitions


class _Coordinator:
    def __init__(self) -> None:
        self.rejoin_requests = 0

    def request_rejoin(self) -> None:
        self.rejoin_requests += 1


class _Consumer:
    """The three things the watch reads of a kafka-python consumer."""

    def __init__(self) -> None:
        self._coordinator = _Coordinator()
        self.state = MemberState.UNJOINED
        self.generation = -1
        self.partitions: set[Any] = set()

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata("g", self.generation, "m", None, self.state)

    def assignment(self) -> set[Any]:
        return self.partitions


def _join(consumer: _Consumer, generation: int, partitions: int) -> None:
    consumer.state, consumer.generation = MemberState.STABLE, generation
    consumer.partitions = {TopicPartition("t", p) for p in range(partitions)}


def test_each_generation_is_logged_once_with_its_partitions(
        caplog: pytest.LogCaptureFixture) -> None:
    consumer = _Consumer()
    watch = MembershipWatch(logging.getLogger("t"), "validate", consumer)
    caplog.set_level(logging.INFO, "t")
    _join(consumer, 1, 2)
    for now in (0.0, 1.0, 2.0):
        watch.observe(now)
    _join(consumer, 2, 1)
    watch.observe(3.0)
    joined = [r.getMessage() for r in caplog.records]
    assert joined == ["validate: member of group g, generation 1, 2 partitions: t[0], t[1]",
                      "validate: member of group g, generation 2, 1 partitions: t[0]"]


def test_while_joining_the_rejoin_flag_is_kept_set_and_a_long_join_is_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    consumer = _Consumer()
    watch = MembershipWatch(logging.getLogger("t"), "project", consumer, slow_join_s=20)
    caplog.set_level(logging.INFO, "t")
    consumer.state = MemberState.REBALANCING
    for now in (0.0, 10.0, 19.0, 21.0, 30.0, 41.5):
        watch.observe(now)
    assert consumer._coordinator.rejoin_requests == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["project: still joining group g after 21 s (state rebalancing)",
                        "project: still joining group g after 42 s (state rebalancing)"]
    _join(consumer, 3, 1)
    watch.observe(50.0)
    assert consumer._coordinator.rejoin_requests == 6, "a stable member is left alone"
    consumer.state = MemberState.REBALANCING
    watch.observe(60.0)
    watch.observe(75.0)
    assert not [r for r in caplog.records[3:] if r.levelno == logging.WARNING], (
        "the slow-join clock starts again with each join")


class _Metadata:
    """partitions_for_topic as kafka-python answers it: an empty set until the topic is known;
    ``known_after`` calls per topic before it is."""

    def __init__(self, known_after: dict[str, int]) -> None:
        self.known_after = dict(known_after)
        self.calls: list[str] = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.calls.append(topic)
        left = self.known_after.get(topic, 0)
        if left > 0:
            self.known_after[topic] = left - 1
            return set()
        return {0, 1, 2, 3}


def test_await_partitions_waits_until_every_topic_is_known() -> None:
    metadata = _Metadata({"a": 0, "b": 3})
    assert await_partitions(metadata, ["a", "b"], timeout_s=5, pause_s=0) == []
    assert metadata.calls.count("a") == 1  # a known topic is not asked again
    assert metadata.calls.count("b") == 4


def test_await_partitions_names_what_is_still_unknown_at_the_deadline() -> None:
    metadata = _Metadata({"a": 0, "b": 10**9})
    assert await_partitions(metadata, ["a", "b"], timeout_s=0.05, pause_s=0.01) == ["b"]
