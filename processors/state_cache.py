"""Decoded participant states kept beside a changelog-backed table, so JSON is not re-parsed.

The streaming projector stores each participant's state in a faust table as a JSON-native value.
Decoding that value costs far more than projecting an event, and so does encoding the whole
history again for every write. :class:`StateCache` keeps, per participant, the decoded
:class:`ParticipantState` together with the very table value object it was decoded from or
encoded to. A cached state is used only while the table still holds that same object: after a
recovery or a rebalance the table holds new objects, so the cache misses and decodes again. The
cache can therefore never serve a state the table does not hold.

Memory is bounded by the table's own size: one entry per participant, each holding that
participant's state and the JSON of its events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.state import ParticipantState, event_to_json
from schemas.event import Event


@dataclass(slots=True)
class _Entry:
    stored: object
    state: ParticipantState
    event_json: dict[str, tuple[Event, dict[str, Any]]] = field(default_factory=dict)


class StateCache:
    """Participant states by id, valid while the table holds the JSON they belong to."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def state(
        self, participant_id: str, stored: Mapping[str, Any] | None
    ) -> ParticipantState | None:
        """Return the state whose JSON is ``stored`` (the table's value), decoding on a miss."""
        if stored is None:
            self._entries.pop(participant_id, None)
            return None
        entry = self._entries.get(participant_id)
        if entry is not None and entry.stored is stored:
            return entry.state
        state = ParticipantState.from_json(stored)
        self._entries[participant_id] = _Entry(stored, state)
        return state

    def encode(self, state: ParticipantState) -> dict[str, Any]:
        """Return ``state.to_json()`` and remember the pair; the caller stores that very dict.

        The JSON of events encoded before for this participant is reused, not rebuilt.
        """
        entry = self._entries.get(state.participant_id)
        known = entry.event_json if entry is not None else {}
        fresh: dict[str, tuple[Event, dict[str, Any]]] = {}

        def encode_event(event: Event) -> dict[str, Any]:
            hit = known.get(event.event_id)
            obj = hit[1] if hit is not None and hit[0] is event else event_to_json(event)
            fresh[event.event_id] = (event, obj)
            return obj

        encoded = state.to_json(encode_event)
        self._entries[state.participant_id] = _Entry(encoded, state, fresh)
        return encoded
