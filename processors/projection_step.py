"""One projection step: a ``lead.events`` record in, view changes out. Live and replay share it.

The live projector (:mod:`consumers.live_projector`) and every audit replay
(:mod:`consumers.audit.replay`) call :meth:`ProjectionStep.apply` for each record in log order;
nothing else dispatches EVENT and CLOCK records, so a replay reproduces the live view exactly:

- an ``EVENT`` record: ``Projector.project(state, event, now=record.received_at)``;
- a ``CLOCK`` record on partition *p*: ``Projector.tick(state, received_at)`` for exactly the
  participants of *p* whose ``Projector.next_due(state)`` is at or before the tick, found by the
  :class:`StateSource`'s timer index (never by a scan of every participant).

Where states live is the caller's business (:class:`StateSource`): dictionaries and heaps for a
replay, a batch overlay over SQL for the live projector, which may hand out states that hold only
their heads (:mod:`processors.state`). When the projector needs such a participant's whole
history it raises :class:`~processors.errors.HistoryNeeded` before anything changed; the step
asks the source to complete that state and applies the input again. Pure: no I/O here, no clock
reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from processors.errors import HistoryNeeded
from processors.projector import Projector
from processors.state import ParticipantState
from processors.view import ViewChange
from schemas.canonical import CanonicalRecord
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.event import Event


class StateSource(Protocol):
    """Where the step reads and keeps participant states (one partition's participants each)."""

    def state(self, participant_id: str) -> ParticipantState | None:
        """The participant's current state, or None if it was never seen.

        A state that holds only its head must hold every event the step will project for it
        whose event_id the participant already has.
        """

    def complete(self, participant_id: str) -> ParticipantState:
        """The participant's current state with its whole history (it has a state)."""

    def due(self, partition: int, now_us: int) -> Iterable[str]:
        """The participants of ``partition`` whose next timer is at or before ``now_us``.

        ``now_us`` is the tick's instant in microseconds since the epoch; judged by each
        participant's latest state, including states stored earlier in the same batch.
        """

    def store(self, participant_id: str, partition: int, state: ParticipantState,
              next_due_us: int | None) -> None:
        """Keep ``state`` as the participant's current state; ``next_due_us`` is its timer."""


@dataclass(slots=True)
class StepResult:
    """What one record did: the view changes, and an event_id reuse to report, if any.

    ``reused`` is the event whose event_id was already held for its participant with other
    content (a partner bug). The projector's ordering rule still decides which one the view
    shows, deterministically; the adapter dead-letters the reuse as ``EVENT_ID_REUSED``.
    """

    changes: list[ViewChange] = field(default_factory=list)
    participant_id: str | None = None
    event_id: str | None = None
    reused: Event | None = None


def micros(instant_seconds: float) -> int:
    """Seconds since the epoch as integer microseconds (the timer index's unit)."""
    return round(instant_seconds * 1_000_000)


class ProjectionStep:
    """Applies ``lead.events`` records to participant states through the pure projector."""

    def __init__(self, projector: Projector, catalog: Catalog) -> None:
        self.projector = projector
        self.catalog = catalog

    def apply(self, source: StateSource, partition: int, record: CanonicalRecord,
              event: Event | None = None) -> StepResult:
        """Apply one decoded record read from ``partition``.

        ``event`` is the record's decoded event if the caller decoded it already. Raises the
        codec's :class:`~schemas.errors.ContractError` if an EVENT's body does not decode.
        """
        if record.kind == "CLOCK":
            return StepResult(self._tick(source, partition, record))
        if event is None:  # the validator encoded it, strictly checked: no need to again
            event = decode(record.event, self.catalog, strict=False)
        pid = event.participant_id
        before = source.state(pid)
        held = before.events.get(event.event_id) if before is not None else None
        try:
            state, changes = self.projector.project(before, event, record.received_at)
        except HistoryNeeded:
            before = source.complete(pid)
            state, changes = self.projector.project(before, event, record.received_at)
        self._keep(source, partition, pid, state)
        reused = event if held is not None and held != event else None
        return StepResult(changes, pid, event.event_id, reused)

    def _tick(self, source: StateSource, partition: int,
              record: CanonicalRecord) -> list[ViewChange]:
        now = record.received_at
        changes: list[ViewChange] = []
        for pid in list(source.due(partition, micros(now.timestamp()))):
            state = source.state(pid)
            if state is None:
                continue
            try:
                state, ticked = self.projector.tick(state, now)
            except HistoryNeeded:
                state, ticked = self.projector.tick(source.complete(pid), now)
            self._keep(source, partition, pid, state)
            changes.extend(ticked)
        return changes

    def _keep(self, source: StateSource, partition: int, pid: str,
              state: ParticipantState) -> None:
        due = self.projector.next_due(state)
        source.store(pid, partition, state, None if due is None else micros(due.timestamp()))
