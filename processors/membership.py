"""The projector's consumer-group membership: logged, and unstuck when kafka-python loses it.

(The validator is on librdkafka, which joins in its own thread: processors/inbound_consumer.py.)
A projector that never becomes a stable member of its group does no work and,
without this, says nothing. :class:`MembershipWatch` logs each new generation joined (with the
partitions it holds) at INFO, and a WARNING when the member has been joining for longer than a
bound, then again each time that long has passed.

kafka-python 3.0.12 can lose a join: when a rebalance that the consumer itself started (its
metadata changed; the first join of every new member, which assigns before the subscribed topics'
metadata arrives, is one) is still waiting for SyncGroup as a poll times out, and the metadata
update lands before the next poll, ``need_rejoin()`` turns False. No later poll awaits the
finished join: the member stays REBALANCING with its heartbeat off, the broker drops it after the
session timeout, and it never joins again. Reproduced under CPU load: about one run in eight of
``tests/e2e/test_api_e2e.py`` and ``tests/e2e/test_pipeline_flow.py`` had a projector that
never joined.
:meth:`MembershipWatch.observe` therefore keeps the coordinator's rejoin flag set while the
member is not stable: the next poll then awaits the join in flight (it never starts a second
one while one is pending), and the flag is cleared by the join's completion as usual. While
joining, the projector polls with the longer :data:`JOINING_POLL_MS`, so that a join mostly
completes inside a poll: one that completes between polls is dropped by kafka-python and
started again.

The projector is a static member (a stable ``group_instance_id``): a member restarted after a
kill takes its predecessor's assignment without a rebalance. The broker then names the old
leader as leader (KIP-345), so a restarted leader does not know it leads, and kafka-python
3.0.12 never rebalances for metadata it learns later. An assignment made before the subscribed
topics' metadata arrived (empty) would then stay empty for good: a validator killed in its
first seconds came back owning nothing (a CI run of ``tests/e2e/test_pipeline_site.py``, when
the validator was on kafka-python). So the projector subscribes only once
:func:`await_partitions` found every topic's partitions, and the group's
first assignment covers them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from kafka.structs import MemberState

#: A step's poll timeout while its consumer is joining the group.
JOINING_POLL_MS = 2000
#: Joining longer than this is logged as a warning (and again each time this long passes).
SLOW_JOIN_S = 20.0
#: How long a step waits at start for its topics' partitions before it gives up.
TOPICS_WAIT_S = 60.0


def await_partitions(consumer: Any, topics: Sequence[str], timeout_s: float = TOPICS_WAIT_S,
                     pause_s: float = 0.2) -> list[str]:
    """Wait until ``consumer`` knows the partitions of every one of ``topics`` (asking the
    broker for metadata while it does not); return those still unknown after ``timeout_s``
    (none when all are known)."""
    deadline = time.monotonic() + timeout_s
    missing = list(topics)
    while True:
        missing = [topic for topic in missing if not consumer.partitions_for_topic(topic)]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(pause_s)


class MembershipWatch:
    """Logs joins and slow joins of one consumer and keeps its join from being lost (call
    :meth:`observe` once per loop, after each poll)."""

    def __init__(self, log: logging.Logger, step: str, consumer: Any,
                 slow_join_s: float = SLOW_JOIN_S) -> None:
        self.log = log
        self.step = step
        self.consumer = consumer
        self.slow_join_s = slow_join_s
        self._generation: int | None = None
        self._joining_since: float | None = None
        self._warned_at: float | None = None

    def observe(self, now: float) -> None:
        """Log what changed since the last call; ``now`` is a monotonic clock's reading."""
        metadata = self.consumer.group_metadata()
        if metadata.state is MemberState.STABLE:
            if metadata.generation_id != self._generation:
                self._generation = metadata.generation_id
                held = sorted(f"{tp.topic}[{tp.partition}]" for tp in self.consumer.assignment())
                self.log.info("%s: member of group %s, generation %d, %d partitions: %s",
                              self.step, metadata.group_id, metadata.generation_id, len(held),
                              ", ".join(held) or "none")
            self._joining_since = self._warned_at = None
            return
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is not None:  # kafka-python's; see the module docstring
            coordinator.request_rejoin()
        if self._joining_since is None:
            self._joining_since = now
            return
        since = self._warned_at if self._warned_at is not None else self._joining_since
        if now - since >= self.slow_join_s:
            self._warned_at = now
            self.log.warning("%s: still joining group %s after %.0f s (state %s)", self.step,
                             metadata.group_id, now - self._joining_since,
                             str(metadata.state).strip("<>"))
