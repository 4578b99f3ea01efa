"""Time travel: what a partner's view held, by receipt time or by occurrence time.

Two instants can be asked about, and they answer different questions:

- **received by R** (:func:`rows_received_by`, ``audit as-of --at R``): the log as the hub had
  received it at R, replayed record by record exactly as the live projector applied it (each
  partition up to its first record received after R, clock ticks included): the rows the live
  view showed at R. An event reported late, or a revocation received late, is not there yet.
- **occurred by T** (:func:`rows_occurred_by`, ``audit as-of --occurred-by T``): every event the
  hub holds now whose ``occurred_at`` is at or before T, whenever it was received, run through
  the policy core with T as its instant (:func:`processors.offline.project_events`): the rows
  the partner would have seen at T had every event been reported the moment it occurred.
  Consents granted by T count; a revocation that occurred by T applies from its occurred_at
  (however late it was received); one that occurred after T does not; a consent whose
  ``valid_from`` is after T or whose ``expires_at`` is at or before T is not in force; an
  intake deadline due by T with no intake that occurred by T is missed.

Both together (``--at R --occurred-by T``) mean: of the events the hub had received by R, those
that occurred by T, evaluated at T ("what the hub knew at R about what had happened by T").

The projector's view is a function of each participant's set of events and the final instant
(:mod:`processors.projector`), so the events are streamed in log order, never sorted: memory is
one state per participant, as for a replay.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from consumers.audit.errors import ReplayError
from consumers.audit.kafka_log import TopicReader
from consumers.audit.replay import LogReplay, Progress, Replayer
from processors.offline import project_events, rows_for
from processors.projector import Projector
from processors.view import ViewChange, ViewRow, apply_changes
from schemas.canonical import decode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.errors import HubError
from schemas.event import Event


def rows_received_by(reader: TopicReader, projector: Projector, catalog: Catalog,
                     partner: str, at: datetime, *, participant: str | None = None,
                     progress: bool = False) -> list[ViewRow]:
    """``partner``'s rows as the live view held them at ``at`` (receipt time), sorted by
    (occurred_at, event_id). Reads ``reader``'s topic up to its end offsets of the moment.
    ``participant`` restricts the answer to one participant (exact, and faster)."""
    rows: dict[str, dict[str, ViewRow]] = {}

    def keep(partition: int, received_at: datetime, changes: list[ViewChange]) -> None:
        apply_changes(rows, [c for c in changes if c.recipient == partner])

    replay = LogReplay(reader, Replayer(projector, catalog, participant=participant), keep,
                       until=at, progress=progress)
    replay.run_to(reader.end_offsets())
    return rows_for(rows, partner)


def rows_occurred_by(reader: TopicReader, projector: Projector, catalog: Catalog,
                     partner: str, occurred_by: datetime, *, received_by: datetime | None = None,
                     participant: str | None = None, progress: bool = False) -> list[ViewRow]:
    """``partner``'s rows at ``occurred_by`` over the events that occurred by then, as the hub
    knows them now (or, with ``received_by``, as it had received them by that instant); see
    the module doc. Sorted by (occurred_at, event_id). Raises ReplayError if an event of the
    log does not decode."""
    events = logged_events(reader, reader.end_offsets(), catalog, received_by=received_by,
                           participant=participant, progress=progress)
    view = project_events(events, projector, at=occurred_by, recipient=partner)
    return rows_for(view, partner)


def logged_events(reader: TopicReader, end: Mapping[int, int], catalog: Catalog, *,
                  received_by: datetime | None = None, participant: str | None = None,
                  progress: bool = False) -> Iterator[Event]:
    """The events of ``reader``'s topic (``lead.events``) up to ``end``, decoded, in log order
    (partitions interleaved).

    CLOCK records and values that are not canonical records are passed over. With
    ``received_by``, each partition stops at its first record received after it (the log as
    it stood then, as :class:`~consumers.audit.replay.LogReplay` reads it). With
    ``participant``, only that participant's events (the others are not decoded). Raises
    ReplayError if an EVENT's body does not decode (the validator accepted nothing of the
    kind).
    """
    wanted = participant.encode() if participant is not None else None
    meter = Progress("events", sum(end.values())) if progress else None
    for partition, offset, key, value in reader.read_raw(end):
        if meter is not None:
            meter.advance()
        try:
            record = decode_canonical(value)
        except HubError:
            continue
        if received_by is not None and record.received_at > received_by:
            reader.finish(partition)
            continue
        if record.kind != "EVENT" or (wanted is not None and key is not None and key != wanted):
            continue
        try:
            event = decode(record.event, catalog, strict=False)
        except HubError as exc:
            raise ReplayError(
                f"partition {partition} offset {offset}: the event does not decode "
                f"({getattr(exc, 'reason', type(exc).__name__)})") from exc
        if participant is None or event.participant_id == participant:
            yield event
    if meter is not None:
        meter.line()
