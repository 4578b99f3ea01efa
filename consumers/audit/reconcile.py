"""``leadhub audit reconcile``: prove that every inbound record is accounted for.

``audit compare`` replays ``lead.events`` and so cannot see an event lost between a partner's
inbound topic and ``lead.events``. Reconciliation closes that gap: every record readable (under
``read_committed``) in each partner's inbound topic ``lead.in.<partner>`` must be

- **accepted**: named by the ``ingest_topic/ingest_partition/ingest_offset`` of a canonical
  ``EVENT`` record of ``lead.events``, or
- **dead-lettered**: named by the ``lead.source.topic/partition/offset`` headers of a record of
  ``lead.dlq``, or
- **pending**: at or past the validator group's committed offset of its partition (not
  processed yet);

anything else is **unaccounted**. An inbound record named more than once (by two events, or by
an event and a dead letter) is a *duplicate*, a finding that is not a loss; a reference that
names no record of the scope (an aborted or never-written offset, a partition that does not
exist) is a *reference without record*.

Scope. The inbound end offsets (last stable offsets) are fixed first, then the validator's
committed offsets, then the end offsets of ``lead.events`` and ``lead.dlq``: an offset the
validator had committed is thereby covered by what is read of its outputs. Inbound records
written after the start are out of scope, and so are references to them. A transaction's
markers reach different partitions at slightly different instants, so before an inbound
record is called unaccounted it is looked up once more in what ``lead.events`` and
``lead.dlq`` received since their end offsets were fixed (``late_references``).

Memory. Offsets are iterated as they exist (transactional topics have gaps for commit markers
and aborted records), never as ranges. The references are read first into one
:class:`OffsetSet` per inbound partition and kind: chunks of 65,536 offsets, each a list of runs
(4 bytes a run) until it has more than 2,048 runs, then an 8 KiB bitmap. So the references take
at most ``min(4 bytes x runs, 1 bit x offsets spanned)`` plus about 0.25 KiB per 65,536 offsets
spanned: contiguous references (the usual case, one run per partition) cost next to nothing, and
even the worst case (a gap after every record: one-record transactions) stays at 1 bit per
inbound offset, 1/64 of a sorted array of offsets. Inbound records then stream through, each
reference is removed as its record is met (the sets shrink while the inbound topics are read),
and what is left are the references without record. Findings (duplicates, references without
record) are kept as lists and unaccounted records in OffsetSets, so memory beyond the
reference sets grows with the findings, never with the log.

The accounting core (:class:`OffsetSet`, :class:`Ledger`, :func:`event_reference`,
:func:`dead_letter_source`) is pure; :func:`reconcile` is the thin Kafka adapter.
"""

from __future__ import annotations

import contextlib
import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from consumers.audit.errors import AuditError, SetupError
from consumers.audit.kafka_log import TopicReader, committed_offsets, wait_until_stable
from schemas.canonical import decode_canonical
from schemas.errors import HubError
from schemas.topics import TopicNames

#: Offsets per chunk of an :class:`OffsetSet` (2**16: relative offsets fit in 16 bits).
CHUNK_BITS = 16
CHUNK_SIZE = 1 << CHUNK_BITS
_CHUNK_MASK = CHUNK_SIZE - 1
#: A chunk with more runs than this becomes a bitmap (4 bytes a run = the bitmap's 8 KiB).
MAX_RUNS = CHUNK_SIZE // 32

#: Where a reference comes from.
Kind = Literal["event", "dead_letter"]
EVENT: Kind = "event"
DEAD_LETTER: Kind = "dead_letter"

#: What became of one inbound record.
Outcome = Literal["accepted", "dead_lettered", "pending", "unaccounted"]

SOURCE_TOPIC = "lead.source.topic"
SOURCE_PARTITION = "lead.source.partition"
SOURCE_OFFSET = "lead.source.offset"

CLIENT_ID = "leadhub-audit-reconcile"


# -- offset sets -----------------------------------------------------------------------------

class _Runs:
    """One chunk as sorted, disjoint, non-adjacent runs ``firsts[i]..lasts[i]`` (inclusive)."""

    __slots__ = ("count", "firsts", "lasts")

    def __init__(self) -> None:
        self.firsts = array("H")
        self.lasts = array("H")
        self.count = 0

    def add(self, rel: int) -> bool:
        firsts, lasts = self.firsts, self.lasts
        n = len(lasts)
        if n == 0 or rel > lasts[-1] + 1:  # past every run: the common, in-order case
            firsts.append(rel)
            lasts.append(rel)
            self.count += 1
            return True
        if rel == lasts[-1] + 1:
            lasts[-1] = rel
            self.count += 1
            return True
        i = bisect_right(firsts, rel) - 1
        if i >= 0 and rel <= lasts[i]:
            return False
        joins_left = i >= 0 and lasts[i] + 1 == rel
        joins_right = i + 1 < n and firsts[i + 1] == rel + 1
        if joins_left and joins_right:
            lasts[i] = lasts[i + 1]
            del firsts[i + 1]
            del lasts[i + 1]
        elif joins_left:
            lasts[i] = rel
        elif joins_right:
            firsts[i + 1] = rel
        else:
            firsts.insert(i + 1, rel)
            lasts.insert(i + 1, rel)
        self.count += 1
        return True

    def discard(self, rel: int) -> bool:
        firsts, lasts = self.firsts, self.lasts
        i = bisect_right(firsts, rel) - 1
        if i < 0 or rel > lasts[i]:
            return False
        first, last = firsts[i], lasts[i]
        if first == last:
            del firsts[i]
            del lasts[i]
        elif rel == first:
            firsts[i] = rel + 1
        elif rel == last:
            lasts[i] = rel - 1
        else:
            lasts[i] = rel - 1
            firsts.insert(i + 1, rel + 1)
            lasts.insert(i + 1, last)
        self.count -= 1
        return True

    def contains(self, rel: int) -> bool:
        i = bisect_right(self.firsts, rel) - 1
        return i >= 0 and rel <= self.lasts[i]

    def runs(self) -> Iterator[tuple[int, int]]:
        return zip(self.firsts, self.lasts, strict=True)

    @property
    def too_many_runs(self) -> bool:
        return len(self.firsts) > MAX_RUNS

    def nbytes(self) -> int:
        return sys.getsizeof(self.firsts) + sys.getsizeof(self.lasts) + 64


class _Bits:
    """One chunk as a bitmap of ``CHUNK_SIZE`` bits."""

    __slots__ = ("bits", "count")

    def __init__(self, runs: _Runs) -> None:
        self.bits = bytearray(CHUNK_SIZE // 8)
        self.count = runs.count
        for first, last in runs.runs():
            self._fill(first, last)

    def _fill(self, first: int, last: int) -> None:
        bits = self.bits
        while first <= last and first & 7:
            bits[first >> 3] |= 1 << (first & 7)
            first += 1
        while first + 7 <= last:
            whole = (last + 1 - first) >> 3
            bits[first >> 3:(first >> 3) + whole] = b"\xff" * whole
            first += whole << 3
        while first <= last:
            bits[first >> 3] |= 1 << (first & 7)
            first += 1

    def add(self, rel: int) -> bool:
        mask = 1 << (rel & 7)
        byte = self.bits[rel >> 3]
        if byte & mask:
            return False
        self.bits[rel >> 3] = byte | mask
        self.count += 1
        return True

    def discard(self, rel: int) -> bool:
        mask = 1 << (rel & 7)
        byte = self.bits[rel >> 3]
        if not byte & mask:
            return False
        self.bits[rel >> 3] = byte & ~mask
        self.count -= 1
        return True

    def contains(self, rel: int) -> bool:
        return bool(self.bits[rel >> 3] & (1 << (rel & 7)))

    def runs(self) -> Iterator[tuple[int, int]]:
        first = -1
        for index, byte in enumerate(self.bits):
            if byte == 0 or byte == 0xFF:
                if byte == 0 and first >= 0:
                    yield first, (index << 3) - 1
                    first = -1
                elif byte == 0xFF and first < 0:
                    first = index << 3
                continue
            for bit in range(8):
                rel = (index << 3) | bit
                if byte & (1 << bit):
                    if first < 0:
                        first = rel
                elif first >= 0:
                    yield first, rel - 1
                    first = -1
        if first >= 0:
            yield first, CHUNK_SIZE - 1

    @property
    def too_many_runs(self) -> bool:
        return False

    def nbytes(self) -> int:
        return sys.getsizeof(self.bits) + 48


class OffsetSet:
    """A set of non-negative offsets, compact for runs (see the module doc for the bound).

    ``add`` and ``discard`` say whether they changed the set; iteration is in ascending order.
    """

    __slots__ = ("_chunks", "_count")

    def __init__(self, offsets: Iterable[int] = ()) -> None:
        self._chunks: dict[int, _Runs | _Bits] = {}
        self._count = 0
        for offset in offsets:
            self.add(offset)

    def add(self, offset: int) -> bool:
        """Add ``offset``; return False if it was already in the set."""
        if offset < 0:
            raise ValueError("offsets are non-negative")
        key = offset >> CHUNK_BITS
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._chunks[key] = _Runs()
        if not chunk.add(offset & _CHUNK_MASK):
            return False
        self._count += 1
        if chunk.too_many_runs:
            assert isinstance(chunk, _Runs)
            self._chunks[key] = _Bits(chunk)
        return True

    def discard(self, offset: int) -> bool:
        """Remove ``offset``; return False if it was not in the set. Empty chunks are freed."""
        key = offset >> CHUNK_BITS
        chunk = self._chunks.get(key)
        if chunk is None or offset < 0 or not chunk.discard(offset & _CHUNK_MASK):
            return False
        self._count -= 1
        if chunk.count == 0:
            del self._chunks[key]
        elif chunk.too_many_runs:
            assert isinstance(chunk, _Runs)
            self._chunks[key] = _Bits(chunk)
        return True

    def __contains__(self, offset: object) -> bool:
        if not isinstance(offset, int) or offset < 0:
            return False
        chunk = self._chunks.get(offset >> CHUNK_BITS)
        return chunk is not None and chunk.contains(offset & _CHUNK_MASK)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for first, last in self.runs():
            yield from range(first, last + 1)

    def runs(self) -> Iterator[tuple[int, int]]:
        """The maximal runs ``(first, last)`` (inclusive), ascending; chunk borders split none."""
        pending: tuple[int, int] | None = None
        for key in sorted(self._chunks):
            base = key << CHUNK_BITS
            for first, last in self._chunks[key].runs():
                if pending is not None and pending[1] + 1 == base + first:
                    pending = (pending[0], base + last)
                    continue
                if pending is not None:
                    yield pending
                pending = (base + first, base + last)
        if pending is not None:
            yield pending

    def nbytes(self) -> int:
        """Approximate bytes held (chunk payloads and their objects, not the dict's table)."""
        return sum(chunk.nbytes() for chunk in self._chunks.values())


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


# -- the Kafka adapter -----------------------------------------------------------------------

class _Meter:
    """Progress lines on ``stream`` every two seconds (nothing without a stream)."""

    def __init__(self, what: str, total: int, stream: TextIO | None) -> None:
        self.progress: Any = None
        if stream is not None:
            from consumers.audit.replay import Progress

            self.progress = Progress(what, total, stream=stream)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance()

    def done(self) -> None:
        if self.progress is not None and self.progress.total:
            self.progress.line()


def reconcile(bootstrap: str, topics: TopicNames, partner_ids: Sequence[str], *,
              progress: bool = False, validator_group: str | None = None,
              stream: TextIO | None = None) -> Reconciliation:
    """Account for every record of the partners' inbound topics (see the module doc).

    ``validator_group``: the validator's consumer group (default: the one ``leadhub run
    validator`` joins). ``progress``: progress lines on ``stream`` (default stderr). Raises
    :class:`SetupError` if ``lead.events`` or ``lead.dlq`` does not exist, a partner id is
    invalid, or Kafka fails during the reconciliation: then nothing is proven either way.
    """
    if validator_group is None:
        from processors.kafka_validator import group_id

        validator_group = group_id(topics)
    out = (stream or sys.stderr) if progress else None
    try:
        inbound = {topics.inbound(partner): partner for partner in partner_ids}
    except ValueError as exc:
        raise SetupError(f"invalid partner id: {exc}") from exc
    try:
        return _reconcile(bootstrap, topics, inbound, validator_group, out)
    except SetupError:
        raise
    except AuditError as exc:
        raise SetupError(f"reconciliation not completed: {exc}") from exc


def _reconcile(bootstrap: str, topics: TopicNames, inbound: Mapping[str, str],
               validator_group: str, out: TextIO | None) -> Reconciliation:
    with contextlib.ExitStack() as stack:
        readers = {topic: stack.enter_context(TopicReader(bootstrap, topic, client_id=CLIENT_ID))
                   for topic in inbound}
        # 1. the scope: what the inbound topics hold now
        scope: dict[str, tuple[str, dict[int, tuple[int, int]]]] = {}
        missing: list[str] = []
        for topic, reader in readers.items():
            ends = reader.end_offsets()
            starts = reader.beginning_offsets() if ends else {}
            if not ends:
                missing.append(topic)
            scope[topic] = (inbound[topic],
                            {p: (starts.get(p, 0), end) for p, end in ends.items()})
        # 2. what the validator has processed of it
        processed = {topic: committed_offsets(bootstrap, validator_group, topic,
                                              sorted(partitions))
                     for topic, (_, partitions) in scope.items() if partitions}
        # 3. its outputs, up to what exists after that, once no open transaction (a killed
        #    validator's, until the broker aborts it) hides committed records behind it
        for name in (topics.events, topics.dlq):
            if not wait_until_stable(bootstrap, name) and out is not None:
                print(f"reconcile: {name} still has an open transaction after 30 s; records "
                      "behind it may be reported unaccounted: run again", file=out)
        events = stack.enter_context(TopicReader(bootstrap, topics.events, client_id=CLIENT_ID))
        dlq = stack.enter_context(TopicReader(bootstrap, topics.dlq, client_id=CLIENT_ID))
        events_end, dlq_end = events.end_offsets(), dlq.end_offsets()
        for name, end in ((topics.events, events_end), (topics.dlq, dlq_end)):
            if not end:
                raise SetupError(f"topic {name} does not exist: run `leadhub topics create` "
                                 "(or set LEADHUB_TOPIC_PREFIX)")
        events_start, dlq_start = events.beginning_offsets(), dlq.beginning_offsets()

        ledger = Ledger(scope, processed)
        result = ledger.result
        result.missing_topics = missing
        result.inbound_start = {t: {p: s for p, (s, _) in parts.items()}
                                for t, (_, parts) in scope.items()}
        result.inbound_end = {t: {p: e for p, (_, e) in parts.items()}
                              for t, (_, parts) in scope.items()}
        result.validator_committed = {t: dict(c) for t, c in processed.items()}
        result.events_end, result.dlq_end = dict(events_end), dict(dlq_end)

        _read_events(events, events_start, events_end, ledger.refer, result, out)
        _read_dead_letters(dlq, dlq_start, dlq_end, ledger.refer, result, out)
        result.reference_bytes = ledger.reference_bytes()
        for topic, reader in readers.items():
            _read_inbound(topic, reader, scope[topic][1], ledger, out)
        if ledger.has_unaccounted:
            # transaction markers reach partitions at slightly different instants: look once
            # more in what lead.events and lead.dlq received since their ends were fixed
            late_events, late_dlq = events.end_offsets(), dlq.end_offsets()
            sink = _late_sink(ledger)
            _read_events(events, events_end, late_events, sink, result, out)
            _read_dead_letters(dlq, dlq_end, late_dlq, sink, result, out)
        return ledger.finish()


def _late_sink(ledger: Ledger) -> ReferenceSink:
    def late(kind: Kind, ref: RecordRef) -> None:
        ledger.resolve_late(kind, ref)

    return late


def _span(start: Mapping[int, int], end: Mapping[int, int]) -> int:
    return sum(max(0, e - start.get(p, 0)) for p, e in end.items())


def _read_events(reader: TopicReader, start: Mapping[int, int], end: Mapping[int, int],
                 refer: ReferenceSink, result: Reconciliation, out: TextIO | None) -> None:
    """Every EVENT record of ``lead.events`` in ``[start, end)`` -> ``refer(EVENT, ref)``."""
    meter = _Meter(f"reconcile {reader.topic}", _span(start, end), out)
    clocks: set[bytes] = set()  # a tick's bytes repeat on every partition
    for _, _, _, value in reader.read_raw(end, start):
        meter.advance()
        if value in clocks:
            continue
        try:
            ref = event_reference(value or b"")
        except HubError:
            result.undecodable_events += 1
            continue
        if ref is None:
            if len(clocks) > 4096:
                clocks.clear()
            clocks.add(value)
            continue
        refer(EVENT, ref)
    meter.done()


def _read_dead_letters(reader: TopicReader, start: Mapping[int, int], end: Mapping[int, int],
                       refer: ReferenceSink, result: Reconciliation,
                       out: TextIO | None) -> None:
    """Every record of ``lead.dlq`` in ``[start, end)`` -> ``refer(DEAD_LETTER, source)``."""
    meter = _Meter(f"reconcile {reader.topic}", _span(start, end), out)
    for _, _, _, _, headers in reader.read_headed(end, start):
        meter.advance()
        ref = dead_letter_source(headers)
        if ref is None:
            result.unattributed_dead_letters += 1
        else:
            refer(DEAD_LETTER, ref)
    meter.done()


def _read_inbound(topic: str, reader: TopicReader, partitions: Mapping[int, tuple[int, int]],
                  ledger: Ledger, out: TextIO | None) -> None:
    """Stream the inbound topic's records in scope through the ledger."""
    start = {p: s for p, (s, _) in partitions.items()}
    end = {p: e for p, (_, e) in partitions.items()}
    books = {p: ledger.book(topic, p) for p in partitions}
    meter = _Meter(f"reconcile {topic}", _span(start, end), out)
    note = ledger.note_duplicate
    for partition, offset, _, _ in reader.read_raw(end, start):
        meter.advance()
        note(books[partition].account(offset)[1])
    meter.done()
