"""When the records of ``lead.events`` were received, and what to say of a window that is empty.

Audit commands take instants of the hub's clock — a record's ``received_at``, stamped by the
validator — never ``occurred_at``: a partner may send last month's events today, and a demo
publishes four months of history in a minute. An instant outside the log's span gives an empty
replay or bundle; these messages say so and name the span.

:class:`LogTimes` accumulates the span (pure); :func:`empty_replay_message` and
:func:`empty_export_message` word the answer (pure). :func:`read_log_times` is the one Kafka
adapter: it reads only the head of each partition (up to its first event) and its tail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from processors.timefmt import format_instant
from schemas.canonical import decode_canonical
from schemas.errors import HubError

if TYPE_CHECKING:  # the adapter takes an open reader; the pure part needs no Kafka client
    from consumers.audit.kafka_log import TopicReader

#: Records read at the end of each partition to find when the last record (and event) was
#: received: clock ticks come every few seconds, so this reaches back an hour or so.
TAIL_RECORDS = 1024


@dataclass
class LogTimes:
    """The ``received_at`` of the first and last record of a log, and of its first and last
    event (CLOCK ticks aside); None where none was seen."""

    first: datetime | None = None
    last: datetime | None = None
    first_event: datetime | None = None
    last_event: datetime | None = None

    def add(self, received_at: datetime, event: bool) -> None:
        """Take one record received at ``received_at`` into account (``event``: not a tick)."""
        if self.first is None or received_at < self.first:
            self.first = received_at
        if self.last is None or received_at > self.last:
            self.last = received_at
        if event:
            if self.first_event is None or received_at < self.first_event:
                self.first_event = received_at
            if self.last_event is None or received_at > self.last_event:
                self.last_event = received_at

    def describe(self, topic: str) -> str:
        """``its records were received from A to B, its events from C to D`` (or: none yet)."""
        if self.first is None or self.last is None:
            return f"{topic} holds no record yet"
        text = (f"the records of {topic} were received from {format_instant(self.first)} to "
                f"{format_instant(self.last)}")
        if self.first_event is None:
            return text + ", all of them clock ticks (no event yet)"
        if self.last_event is None:
            return text + f", its first event at {format_instant(self.first_event)}"
        return text + (f", its events from {format_instant(self.first_event)} to "
                       f"{format_instant(self.last_event)}")


CLOCK_NOTE = ("instants are received_at, the hub's clock when a record arrived, not the "
              "events' occurred_at")


def empty_replay_message(topic: str, until: datetime | None, records: int,
                         times: LogTimes) -> str:
    """Why a replay of ``topic`` (up to ``until``; ``records`` replayed) gave no row."""
    if times.first is None:
        return (f"the replayed view is empty: {times.describe(topic)} (is LEADHUB_TOPIC_PREFIX "
                "the hub's?)")
    if times.first_event is None:
        return f"the replayed view is empty: {times.describe(topic)}"
    if until is not None and until < times.first_event:
        ticks = f" ({records} records by then, all clock ticks)" if records else ""
        return (f"the replayed view is empty: no event of {topic} was received at or before "
                f"--until {format_instant(until)}{ticks}; {times.describe(topic)}: pick an "
                f"--until after {format_instant(times.first_event)} ({CLOCK_NOTE})")
    return (f"the replayed view is empty: the events of {topic} received by then give no "
            f"recipient a row; {times.describe(topic)}")


def empty_export_message(topic: str, window_from: datetime, window_to: datetime,
                         times: LogTimes) -> str:
    """Why an export of [``window_from``, ``window_to``] of ``topic`` has nothing to export."""
    window = f"[{format_instant(window_from)}, {format_instant(window_to)}]"
    if times.first is None:
        return f"nothing to export in {window}: {times.describe(topic)}"
    return (f"nothing to export: no record of {topic} was received in {window}; "
            f"{times.describe(topic)}: pick a window that overlaps them ({CLOCK_NOTE})")


def read_log_times(reader: TopicReader, tail: int = TAIL_RECORDS) -> LogTimes:
    """The span of ``reader``'s topic (a ``lead.events``): its head up to each partition's first
    event, and its last ``tail`` records per partition. ``last_event`` is None when no event is
    among those last records. Raises AuditError if the broker cannot be read."""
    times = LogTimes()
    begin = reader.beginning_offsets()
    end = {p: e for p, e in reader.end_offsets().items() if e > begin.get(p, 0)}
    for partition, _offset, _key, value in reader.read_raw(end, begin):
        event = _take(times, value)
        if event:
            reader.finish(partition)
    tails = {p: max(begin.get(p, 0), e - tail) for p, e in end.items()}
    for _partition, _offset, _key, value in reader.read_raw(end, tails):
        _take(times, value)
    return times


def _take(times: LogTimes, value: bytes) -> bool:
    """Add one raw record to ``times``; True if it is an event (undecodable: skipped)."""
    try:
        record = decode_canonical(value)
    except HubError:
        return False
    times.add(record.received_at, record.kind == "EVENT")
    return record.kind == "EVENT"
