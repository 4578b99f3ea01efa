"""Decoded participant states kept beside the changelog-backed tables, and their incremental writes.

The streaming projector stores each participant's state in two faust tables, in the split form
of :mod:`processors.state`: a head per participant and an entry per event. Decoding costs far
more than projecting an event, and writing the whole history again for every batch would cost
more than the batch itself. :class:`StateCache` keeps, per participant, the decoded
:class:`ParticipantState` together with the very head object the table holds, and a state is
served from the cache only while the table still holds that same object: after a recovery or a
rebalance the table holds new objects, so the cache misses and decodes again. The cache can
therefore never serve a state the table does not hold.

:meth:`StateCache.encode` turns a new state into what must be written: the new head, the entries
of the events that changed since the state the table holds, and the events that left it.

Memory is bounded by the tables' own size: one decoded state per participant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from processors.state import ParticipantState, entry_to_json, head_to_json, state_from_parts


@dataclass(frozen=True, slots=True)
class StateWrite:
    """What to store for one participant, in this order: ``entries``, then ``head``, then
    delete ``removed`` (so that a crash between writes leaves a head whose every event has an
    entry: extra entries are ignored, missing ones never happen)."""

    head: dict[str, Any]
    entries: dict[str, dict[str, Any]]
    removed: list[str]


@dataclass(slots=True)
class _Cached:
    head: object
    state: ParticipantState


class StateCache:
    """Participant states by id, valid while the table holds the head they belong to."""

    def __init__(self) -> None:
        self._cached: dict[str, _Cached] = {}

    def state(self, participant_id: str, head: Mapping[str, Any] | None,
              entry: Callable[[str], Mapping[str, Any] | None]) -> ParticipantState | None:
        """Return the state whose head is ``head`` (the table's value), decoding on a miss.

        ``entry(event_id)`` reads one event entry of this participant from its table.
        """
        if head is None:
            self._cached.pop(participant_id, None)
            return None
        cached = self._cached.get(participant_id)
        if cached is not None and cached.head is head:
            return cached.state
        state = state_from_parts(head, entry)
        self._cached[participant_id] = _Cached(head, state)
        return state

    def encode(self, state: ParticipantState, touched: Iterable[str]) -> StateWrite:
        """What to write so that the tables hold ``state``; remember the pair.

        ``touched`` are the event ids of the view changes that led from the state the tables
        hold (the one last returned or encoded here) to ``state``: every change of a row shape
        comes with one. Entries are rewritten for those and for events that are new or replaced.
        The caller must store exactly ``head`` (this very dict) as the participant's head.
        """
        cached = self._cached.get(state.participant_id)
        before = cached.state.events if cached is not None else {}
        changed = {event_id for event_id in touched if event_id in state.events}
        changed.update(event_id for event_id, event in state.events.items()
                       if before.get(event_id) is not event)
        write = StateWrite(
            head=head_to_json(state),
            entries={event_id: entry_to_json(state, event_id) for event_id in changed},
            removed=[event_id for event_id in before if event_id not in state.events],
        )
        self._cached[state.participant_id] = _Cached(write.head, state)
        return write
