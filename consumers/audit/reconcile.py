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

The accounting core is pure and lives apart: :mod:`consumers.audit.reconcile_ledger`
(:class:`Ledger`, :func:`event_reference`, :func:`dead_letter_source`) over
:mod:`consumers.audit.offset_set`; :func:`reconcile` here is the thin Kafka adapter.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from consumers.audit.errors import AuditError, SetupError
from consumers.audit.kafka_log import TopicReader, committed_offsets, wait_until_stable
from consumers.audit.reconcile_ledger import (
    DEAD_LETTER,
    EVENT,
    Kind,
    Ledger,
    Reconciliation,
    RecordRef,
    ReferenceSink,
    dead_letter_source,
    event_reference,
)
from schemas.errors import HubError
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

CLIENT_ID = "leadhub-audit-reconcile"


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


def reconcile(kafka: KafkaConnection, topics: TopicNames, partner_ids: Sequence[str], *,
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
        return _reconcile(kafka, topics, inbound, validator_group, out)
    except SetupError:
        raise
    except AuditError as exc:
        raise SetupError(f"reconciliation not completed: {exc}") from exc


def _reconcile(kafka: KafkaConnection, topics: TopicNames, inbound: Mapping[str, str],
               validator_group: str, out: TextIO | None) -> Reconciliation:
    with contextlib.ExitStack() as stack:
        readers = {topic: stack.enter_context(TopicReader(kafka, topic, client_id=CLIENT_ID))
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
        processed = {topic: committed_offsets(kafka, validator_group, topic,
                                              sorted(partitions))
                     for topic, (_, partitions) in scope.items() if partitions}
        # 3. its outputs, up to what exists after that, once no open transaction (a killed
        #    validator's, until the broker aborts it) hides committed records behind it
        for name in (topics.events, topics.dlq):
            if not wait_until_stable(kafka, name) and out is not None:
                print(f"reconcile: {name} still has an open transaction after 30 s; records "
                      "behind it may be reported unaccounted: run again", file=out)
        events = stack.enter_context(TopicReader(kafka, topics.events, client_id=CLIENT_ID))
        dlq = stack.enter_context(TopicReader(kafka, topics.dlq, client_id=CLIENT_ID))
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
