"""The accounting core of ``leadhub audit reconcile``, pure: references in, a verdict out.

Each record of ``lead.events`` names the inbound record it came from (ingest topic, partition,
offset) and each dead letter names its source in headers; :class:`Ledger` collects those
references per inbound partition (:class:`consumers.audit.offset_set.OffsetSet`), then is shown
every inbound record once and says what became of it: accepted, dead-lettered, pending (past
the validator's committed offset) or unaccounted. See :mod:`consumers.audit.reconcile`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from consumers.audit.offset_set import OffsetSet
from schemas.canonical import decode_canonical

#: Where a reference comes from.
Kind = Literal["event", "dead_letter"]
EVENT: Kind = "event"
DEAD_LETTER: Kind = "dead_letter"

#: What became of one inbound record.
Outcome = Literal["accepted", "dead_lettered", "pending", "unaccounted"]

SOURCE_TOPIC = "lead.source.topic"
SOURCE_PARTITION = "lead.source.partition"
SOURCE_OFFSET = "lead.source.offset"


# -- parsing references ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True, order=True)
class RecordRef:
    """Coordinates of one Kafka record."""

    topic: str
    partition: int
    offset: int

    def describe(self) -> str:
        """``topic partition offset``."""
        return f"{self.topic} {self.partition} {self.offset}"


#: Receives one reference: (where it comes from, the record it names).
ReferenceSink = Callable[[Kind, RecordRef], None]


def event_reference(value: bytes) -> RecordRef | None:
    """The inbound record a ``lead.events`` value names, or None for a CLOCK record.

    Raises :class:`~schemas.canonical.CanonicalRecordError` (a HubError) if ``value`` is not a
    canonical record.
    """
    record = decode_canonical(value)
    if record.kind != "EVENT":
        return None
    return RecordRef(record.ingest_topic, record.ingest_partition, record.ingest_offset)


def dead_letter_source(headers: Iterable[tuple[str, bytes | None]]) -> RecordRef | None:
    """The record a ``lead.dlq`` record's ``lead.source.*`` headers name; None if they are
    missing or malformed (the last of a repeated header counts)."""
    found: dict[str, bytes | None] = {}
    for name, value in headers:
        if name in (SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET):
            found[name] = value
    try:
        topic = found[SOURCE_TOPIC]
        partition = found[SOURCE_PARTITION]
        offset = found[SOURCE_OFFSET]
        if topic is None or partition is None or offset is None:
            return None
        return RecordRef(topic.decode(), int(partition), int(offset))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


# -- the ledger ------------------------------------------------------------------------------

@dataclass
class TopicTally:
    """Counts of one inbound topic: every record is exactly one of accepted, dead_lettered,
    pending, unaccounted; ``duplicates`` counts records named more than once."""

    topic: str
    partner: str
    records: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    pending: int = 0
    unaccounted: int = 0
    duplicates: int = 0

    def to_json(self) -> dict[str, int | str]:
        """The counts as a JSON object."""
        return {"topic": self.topic, "partner": self.partner, "records": self.records,
                "accepted": self.accepted, "dead_lettered": self.dead_lettered,
                "pending": self.pending, "unaccounted": self.unaccounted,
                "duplicates": self.duplicates}


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An inbound record named by more than one reference."""

    record: RecordRef
    event_refs: int
    dead_letter_refs: int

    def describe(self) -> str:
        """Coordinates and how often each topic names the record."""
        return (f"{self.record.describe()}: {self.event_refs} in lead.events, "
                f"{self.dead_letter_refs} in lead.dlq")


@dataclass(frozen=True, slots=True)
class Orphan:
    """A reference naming no inbound record of the scope (``refs``: how many times)."""

    kind: Kind
    record: RecordRef
    refs: int = 1

    def describe(self) -> str:
        """Which topic refers, to what."""
        source = "lead.events" if self.kind == EVENT else "lead.dlq"
        times = f" ({self.refs} times)" if self.refs > 1 else ""
        return f"{source} -> {self.record.describe()}{times}"


class PartitionBook:
    """The references to one inbound partition ``[start, end)`` and the fate of its records.

    Feed it every reference (:meth:`refer`), then every record of the partition
    (:meth:`account`, any order, each once), then optionally late references
    (:meth:`resolve_late`); :meth:`orphans` lists the references no record matched.
    """

    __slots__ = ("dead_letter_dups", "dead_letters", "end", "event_dups", "events", "partition",
                 "processed", "start", "tally", "topic", "unaccounted")

    def __init__(self, topic: str, partition: int, start: int, end: int, processed: int,
                 tally: TopicTally) -> None:
        self.topic, self.partition = topic, partition
        self.start, self.end, self.processed = start, end, processed
        self.tally = tally
        self.events = OffsetSet()
        self.dead_letters = OffsetSet()
        self.event_dups: dict[int, int] = {}
        self.dead_letter_dups: dict[int, int] = {}
        self.unaccounted = OffsetSet()

    def refer(self, kind: Kind, offset: int) -> None:
        """Record one reference to ``offset`` (the caller checked it is in the scope)."""
        if kind == EVENT:
            if not self.events.add(offset):
                self.event_dups[offset] = self.event_dups.get(offset, 0) + 1
        elif not self.dead_letters.add(offset):
            self.dead_letter_dups[offset] = self.dead_letter_dups.get(offset, 0) + 1

    def account(self, offset: int) -> tuple[Outcome, Duplicate | None]:
        """Classify the record at ``offset`` and consume its references.

        Accepted if an event names it, else dead-lettered if a dead letter does, else pending
        if the validator has not committed past it, else unaccounted. The Duplicate is set
        when more than one reference names it.
        """
        if not self.start <= offset < self.end:
            raise ValueError(f"offset {offset} is outside the scope of "
                             f"{self.topic}[{self.partition}]")
        tally = self.tally
        tally.records += 1
        event_refs = int(self.events.discard(offset))
        if event_refs and self.event_dups:
            event_refs += self.event_dups.pop(offset, 0)
        dead_refs = int(self.dead_letters.discard(offset))
        if dead_refs and self.dead_letter_dups:
            dead_refs += self.dead_letter_dups.pop(offset, 0)
        outcome: Outcome
        if event_refs:
            tally.accepted += 1
            outcome = "accepted"
        elif dead_refs:
            tally.dead_lettered += 1
            outcome = "dead_lettered"
        elif offset >= self.processed:
            tally.pending += 1
            outcome = "pending"
        else:
            tally.unaccounted += 1
            self.unaccounted.add(offset)
            outcome = "unaccounted"
        if event_refs + dead_refs > 1:
            tally.duplicates += 1
            return outcome, Duplicate(RecordRef(self.topic, self.partition, offset),
                                      event_refs, dead_refs)
        return outcome, None

    def resolve_late(self, kind: Kind, offset: int) -> bool:
        """Account an unaccounted record by a reference written after the scope was fixed."""
        if not self.unaccounted.discard(offset):
            return False
        self.tally.unaccounted -= 1
        if kind == EVENT:
            self.tally.accepted += 1
        else:
            self.tally.dead_lettered += 1
        return True

    def orphans(self) -> Iterator[Orphan]:
        """The references that matched no record, ascending by offset, events first."""
        for kind, refs, dups in ((EVENT, self.events, self.event_dups),
                                 (DEAD_LETTER, self.dead_letters, self.dead_letter_dups)):
            for offset in refs:
                yield Orphan(kind, RecordRef(self.topic, self.partition, offset),
                             1 + dups.get(offset, 0))

    def nbytes(self) -> int:
        """Approximate bytes held by the reference sets."""
        return self.events.nbytes() + self.dead_letters.nbytes()


@dataclass
class Reconciliation:
    """The outcome of a reconciliation: counts per inbound topic and every finding.

    ``complete``: no inbound record is unaccounted (exit 0). Findings that are no loss
    (``duplicates``, ``orphans``) fail only a strict check (:meth:`ok`). Counters of
    references left out: ``references_after_end`` (to records written after the scope was
    fixed), ``references_before_start`` (to records no longer in the log),
    ``foreign_references`` (to topics other than the reconciled inbound topics, e.g. a
    projector dead letter naming lead.events), ``late_references`` (written after the scope
    was fixed, accounting a record that would have been unaccounted).
    """

    topics: dict[str, TopicTally]
    unaccounted: dict[tuple[str, int], OffsetSet] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    references_after_end: int = 0
    references_before_start: int = 0
    foreign_references: int = 0
    late_references: int = 0
    undecodable_events: int = 0
    unattributed_dead_letters: int = 0
    missing_topics: list[str] = field(default_factory=list)
    inbound_start: dict[str, dict[int, int]] = field(default_factory=dict)
    inbound_end: dict[str, dict[int, int]] = field(default_factory=dict)
    validator_committed: dict[str, dict[int, int]] = field(default_factory=dict)
    events_end: dict[int, int] = field(default_factory=dict)
    dlq_end: dict[int, int] = field(default_factory=dict)
    reference_bytes: int = 0

    @property
    def totals(self) -> TopicTally:
        """The counts summed over every inbound topic."""
        total = TopicTally("*", "*")
        for tally in self.topics.values():
            total.records += tally.records
            total.accepted += tally.accepted
            total.dead_lettered += tally.dead_lettered
            total.pending += tally.pending
            total.unaccounted += tally.unaccounted
            total.duplicates += tally.duplicates
        return total

    @property
    def complete(self) -> bool:
        """True iff every inbound record in scope is accepted, dead-lettered or pending."""
        return not any(self.unaccounted.values())

    def ok(self, strict: bool = False) -> bool:
        """``complete``, and with ``strict`` also no duplicates and no orphan references."""
        return self.complete and not (strict and (self.duplicates or self.orphans))

    def unaccounted_records(self) -> Iterator[RecordRef]:
        """Every unaccounted inbound record, by topic, partition, offset."""
        for topic, partition in sorted(self.unaccounted):
            for offset in self.unaccounted[(topic, partition)]:
                yield RecordRef(topic, partition, offset)


class Ledger:
    """The pure accounting core: references in, inbound records in, :class:`Reconciliation` out.

    ``scope``: per inbound topic (in report order, with its partner), per partition, the
    ``(start, end)`` offsets of the records to account for. ``processed``: per topic and
    partition, the validator group's committed offset (absent: nothing processed). Call
    :meth:`refer` for every reference before :meth:`account` for any record.
    """

    def __init__(self, scope: Mapping[str, tuple[str, Mapping[int, tuple[int, int]]]],
                 processed: Mapping[str, Mapping[int, int]]) -> None:
        self.result = Reconciliation(topics={})
        self.books: dict[tuple[str, int], PartitionBook] = {}
        self._topics: set[str] = set()
        for topic, (partner, partitions) in scope.items():
            tally = self.result.topics[topic] = TopicTally(topic, partner)
            self._topics.add(topic)
            done = processed.get(topic, {})
            for partition, (start, end) in partitions.items():
                self.books[(topic, partition)] = PartitionBook(
                    topic, partition, start, end, done.get(partition, start), tally)

    def book(self, topic: str, partition: int) -> PartitionBook:
        """The book of one inbound partition of the scope (KeyError if it has none)."""
        return self.books[(topic, partition)]

    def refer(self, kind: Kind, ref: RecordRef) -> None:
        """Record that ``lead.events`` (EVENT) or ``lead.dlq`` (DEAD_LETTER) names ``ref``."""
        if ref.topic not in self._topics:
            self.result.foreign_references += 1
            return
        book = self.books.get((ref.topic, ref.partition))
        if book is None:
            self.result.orphans.append(Orphan(kind, ref))
        elif ref.offset >= book.end:
            self.result.references_after_end += 1
        elif ref.offset < book.start:
            self.result.references_before_start += 1
        else:
            book.refer(kind, ref.offset)

    def account(self, topic: str, partition: int, offset: int) -> Outcome:
        """Classify one inbound record of the scope (see :meth:`PartitionBook.account`)."""
        outcome, duplicate = self.books[(topic, partition)].account(offset)
        if duplicate is not None:
            self.result.duplicates.append(duplicate)
        return outcome

    def note_duplicate(self, duplicate: Duplicate | None) -> None:
        """Keep the duplicate a :meth:`PartitionBook.account` call returned (if any)."""
        if duplicate is not None:
            self.result.duplicates.append(duplicate)

    def resolve_late(self, kind: Kind, ref: RecordRef) -> bool:
        """A reference written after the scope was fixed: account an unaccounted record by it.

        Returns True if it did; any other late reference is ignored.
        """
        book = self.books.get((ref.topic, ref.partition))
        if book is None or not book.resolve_late(kind, ref.offset):
            return False
        self.result.late_references += 1
        return True

    @property
    def has_unaccounted(self) -> bool:
        """True if some record is unaccounted so far."""
        return any(book.unaccounted for book in self.books.values())

    def reference_bytes(self) -> int:
        """Approximate bytes the reference sets hold now."""
        return sum(book.nbytes() for book in self.books.values())

    def finish(self) -> Reconciliation:
        """Collect the unaccounted records and orphan references; return the result."""
        result = self.result
        for key, book in sorted(self.books.items()):
            if book.unaccounted:
                result.unaccounted[key] = book.unaccounted
            result.orphans.extend(book.orphans())
        result.duplicates.sort(key=lambda d: d.record)
        return result
