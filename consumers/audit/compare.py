"""``leadhub audit compare``: the live SQL view's digest against a replay of ``lead.events``.

The live projector writes its tracking rows (next offset of ``lead.events`` per partition) in
the same transaction as the rows they account for. So one read snapshot of the live database
gives both the view's digest and exactly the offsets that produced it; the replay runs up to
those offsets and the two must be equal, while the hub keeps running. ``caught_up`` says
whether the projector had reached the end of ``lead.events`` when the snapshot was taken (the
command can wait for that first, ``settle_s``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select

from consumers.audit.digest import RowDifference, ViewDigest, digest_rows, first_differences
from consumers.audit.kafka_log import TopicReader, wait_until_stable
from consumers.audit.replay import LogReplay, Replayer, ViewWriter, ordered_rows
from consumers.store import ViewStore, tracking
from processors.projector import Projector
from schemas.catalog import Catalog
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames


@dataclass
class Comparison:
    """The outcome: both digests, the end offsets replayed, and the first differing rows."""

    live: ViewDigest
    replay: ViewDigest
    end_offsets: dict[int, int]
    caught_up: bool
    attempts: int
    differences: list[RowDifference] = field(default_factory=list)

    @property
    def match(self) -> bool:
        """True iff the live view and the replay hold exactly the same rows."""
        return self.live == self.replay


def live_snapshot(live: ViewStore, topic: str) -> tuple[dict[int, int], ViewDigest]:
    """The live view's tracking offsets of ``topic`` and its digest, read in one snapshot."""
    with live.engine.connect() as connection:
        if live.engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            offsets = {int(p): int(o) for p, o in connection.execute(
                select(tracking.c.partition, tracking.c.next_offset)
                .where(tracking.c.topic == topic))}
            digest = digest_rows(ordered_rows(live, connection))
    return offsets, digest


def pending_records(reader: TopicReader, done: Mapping[int, int],
                    end: Mapping[int, int]) -> int:
    """How many records of the reader's topic lie between ``done`` and ``end`` (committed ones:
    commit markers and aborted records occupy offsets but are not records)."""
    targets = {p: e for p, e in end.items() if e > done.get(p, 0)}
    if not targets:
        return 0
    return sum(1 for _ in reader.read_raw(targets, {p: done.get(p, 0) for p in targets}))


def wait_caught_up(kafka: KafkaConnection, topic: str, live: ViewStore, timeout_s: float) -> bool:
    """Wait until the live projector has read every record of ``topic`` that exists now.

    Returns False if that did not happen within ``timeout_s`` (the projector is down or behind).
    """
    deadline = time.monotonic() + timeout_s
    wait_until_stable(kafka, topic, timeout_s)
    with TopicReader(kafka, topic, client_id="leadhub-audit-compare") as reader:
        end = reader.end_offsets()
        while True:
            done = live.committed_offsets(topic)
            if pending_records(reader, done, end) == 0:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def compare_live(*, kafka: KafkaConnection, topics: TopicNames, projector: Projector,
                 catalog: Catalog, live: ViewStore, replay_store: ViewStore, settle_s: float = 30.0,
                 progress: bool = False) -> Comparison:
    """Compare the live view with a replay into ``replay_store`` (fresh); see the module doc."""
    caught_up = wait_caught_up(kafka, topics.events, live, settle_s)
    offsets, live_digest = live_snapshot(live, topics.events)
    with TopicReader(kafka, topics.events, client_id="leadhub-audit-replay") as reader:
        writer = ViewWriter(replay_store)
        replay = LogReplay(reader, Replayer(projector, catalog), writer, progress=progress)
        end = {p: offsets.get(p, 0) for p in reader.partitions()}
        replay.run_to(end)
        writer.flush()
    result = Comparison(live=live_digest, replay=digest_rows(ordered_rows(replay_store)),
                        end_offsets=end, caught_up=caught_up, attempts=1)
    if not result.match:
        result.differences = first_differences(ordered_rows(live), ordered_rows(replay_store))
    return result
