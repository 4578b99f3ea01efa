"""``leadhub audit compare``: the live SQL view's digest against a replay of ``lead.events``.

The live view reflects only what the projector has processed and the sink has committed, and the
hub never stops (clock ticks arrive every few seconds). So a comparison fixes end offsets ``E``
of ``lead.events``, waits until the projector's consumer group has committed ``E`` and the sink
has applied every view change that existed afterwards, replays up to ``E`` and compares digests.
If records past ``E`` changed the live view meanwhile, it tries again from the new end offsets
(the replay continues where it stopped, so a retry costs only the new records). A mismatch is
reported once ``attempts`` are used up; ``caught_up`` says whether the pipeline kept up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from consumers.audit.digest import RowDifference, ViewDigest, digest_rows, first_differences
from consumers.audit.kafka_log import TopicReader, committed_offsets
from consumers.audit.replay import LogReplay, Replayer, ViewWriter, ordered_rows
from consumers.store import ViewStore
from processors.projector import Projector
from schemas.catalog import Catalog
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


def wait_caught_up(bootstrap: str, topics: TopicNames, live: ViewStore, projector_group: str,
                   events_end: Mapping[int, int], timeout_s: float) -> bool:
    """Wait until the projector committed ``events_end`` and the sink applied its changes.

    Returns False if that did not happen within ``timeout_s`` (the pipeline is down or behind).
    """
    deadline = time.monotonic() + timeout_s
    wanted = {p: e for p, e in events_end.items() if e > 0}
    while True:
        done = committed_offsets(bootstrap, projector_group, topics.events, sorted(wanted))
        if all(done.get(p, 0) >= e for p, e in wanted.items()):
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    with TopicReader(bootstrap, topics.view_changes, client_id="leadhub-audit-compare") as r:
        changes_end = {p: e for p, e in r.end_offsets().items() if e > 0}
    while True:
        applied = live.committed_offsets(topics.view_changes)
        if all(applied.get(p, 0) >= e for p, e in changes_end.items()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


def compare_live(*, bootstrap: str, topics: TopicNames, projector: Projector, catalog: Catalog,
                 live: ViewStore, replay_store: ViewStore, projector_group: str,
                 attempts: int = 5, settle_s: float = 30.0,
                 progress: bool = False) -> Comparison:
    """Compare the live view with a replay into ``replay_store`` (fresh); see the module doc."""
    with TopicReader(bootstrap, topics.events, client_id="leadhub-audit-replay") as reader:
        writer = ViewWriter(replay_store)
        replay = LogReplay(reader, Replayer(projector, catalog), writer, progress=progress)
        result: Comparison | None = None
        for attempt in range(1, max(1, attempts) + 1):
            end = reader.end_offsets()
            caught_up = wait_caught_up(bootstrap, topics, live, projector_group, end, settle_s)
            replay.run_to(end)
            writer.flush()
            result = Comparison(live=digest_rows(ordered_rows(live)),
                                replay=digest_rows(ordered_rows(replay_store)),
                                end_offsets=dict(end), caught_up=caught_up, attempts=attempt)
            if result.match:
                return result
            time.sleep(1.0)
    assert result is not None
    result.differences = first_differences(ordered_rows(live), ordered_rows(replay_store))
    return result
