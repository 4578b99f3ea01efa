"""Per-participant projection state; its head, events and rows are stored apart (SQL).

A :class:`ParticipantState` is immutable: the projector returns a new one for every step and
shares unchanged parts with the old one. It holds everything the projector needs to turn the
next event or clock tick into a *difference* of the view:

- ``events``: the participant's accepted and hub-derived events by event_id (the history
  re-projected when consents change; its keys are the dedupe set). A derived
  ``IntakeDeadlineMissed`` leaves it again when a late-reported intake shows the deadline met;
- ``consents``: consents by consent_id (the grant with the smallest ``(occurred_at, event_id)``
  of that id), revoked ones kept with ``revoked_at``, ones a program exit ended
  (``expires_on_event``) with ``ended_at``;
- ``orphan_revocations``: revocations that arrived before their grant (the grant, when it comes,
  is born revoked — a revocation is never lost to reordering);
- ``deadlines``: pending intake deadlines by referral event_id (a missed one is held as its
  derived event, a met one not at all);
- ``rows``: per recipient, per event_id, the :class:`RowShape` that recipient currently has;
- ``as_of``: the latest instant applied; a participant's time never runs backwards.

A state is *complete* or holds only its head (``complete`` False): then it has every part above
but, of ``events`` and ``rows``, only the events its reader looked up (each event_id it is about
to project, found or not) or added since, and their rows. The projector works on such a state
while a step needs nothing else (an ordinary event adds its rows) and raises
:class:`~processors.errors.HistoryNeeded` when it would read the rest (a consent change, a
deadline, a displaced event_id): the reader then completes it (:func:`with_history`) and applies
the input again. So reading a participant back costs the same whatever its history, except for
the steps that re-project that history anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from immutables import Map

from processors.consent import Consent
from processors.errors import HistoryNeeded, StateError
from processors.policy import REDISCLOSURE_NOTICE
from processors.timefmt import format_instant, parse_instant, value_from_json, value_to_json
from processors.view import RowShape, ViewRow
from schemas.event import Event

#: A tag in each stored state record, checked on decoding (a record from another encoding is an
#: error, never misread). It is not a second version knob: the stored state lives in the view
#: database, so a change of encoding is a change of the projection and bumps
#: ``consumers.store.PROJECTION_VERSION`` (the one version an operator is told about at start).
STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class PendingDeadline:
    """An arrest-diversion referral with charges held, waiting for intake until ``due_at``."""

    referral_event_id: str
    referral_occurred_at: datetime
    due_at: datetime


#: Per recipient, per event_id, the shape of the row that recipient has (persistent maps).
Rows = Map[str, Map[str, RowShape]]


def as_rows(rows: Mapping[str, Mapping[str, RowShape]]) -> Rows:
    """``rows`` as persistent maps (no copy when they already are)."""
    if isinstance(rows, Map) and all(isinstance(inner, Map) for inner in rows.values()):
        return rows
    return Map({recipient: inner if isinstance(inner, Map) else Map(inner)
                for recipient, inner in rows.items()})


@dataclass(frozen=True)
class ParticipantState:
    """Everything the projector keeps about one participant. Treat as immutable.

    ``events`` and ``rows`` are persistent maps (:class:`immutables.Map`): the projector adds
    an event or a row in time that does not grow with the participant's history, sharing the
    rest with the previous state. Plain mappings given to the constructor are converted.
    """

    participant_id: str
    as_of: datetime | None = None
    events: Map[str, Event] = field(default_factory=Map)
    consents: Mapping[str, Consent] = field(default_factory=dict)
    orphan_revocations: Mapping[str, datetime] = field(default_factory=dict)
    deadlines: Mapping[str, PendingDeadline] = field(default_factory=dict)
    rows: Rows = field(default_factory=Map)
    #: False: the state holds its head but only part of its events and rows (module docstring).
    complete: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.events, Map):
            object.__setattr__(self, "events", Map(self.events))
        if not isinstance(self.rows, Map):
            object.__setattr__(self, "rows", as_rows(self.rows))

    def view_rows(self) -> dict[str, dict[str, ViewRow]]:
        """Return the participant's current rows: recipient -> event_id -> :class:`ViewRow`."""
        require_history(self)
        view: dict[str, dict[str, ViewRow]] = {}
        for recipient, shapes in self.rows.items():
            view[recipient] = {
                event_id: build_row(recipient, self.events[event_id], shape)
                for event_id, shape in shapes.items()
            }
        return view

    def to_json(
        self, event_json: Callable[[Event], dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Return a JSON-native dict with a deterministic key order (same state, same JSON).

        ``event_json`` converts one event (default :func:`event_to_state_json`).
        """
        require_history(self)
        encode_event = event_json or event_to_state_json
        return {
            **head_to_json(self),
            "events": [encode_event(self.events[key]) for key in sorted(self.events)],
            "rows": {
                recipient: {
                    event_id: self.rows[recipient][event_id].to_json()
                    for event_id in sorted(self.rows[recipient])
                }
                for recipient in sorted(self.rows)
            },
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ParticipantState:
        """Rebuild a state from :meth:`to_json` output.

        Raises :class:`StateError` (naming the participant id only) if the data is not a state
        of a known format.
        """
        participant_id = str(obj.get("participant_id", "")) if isinstance(obj, Mapping) else ""
        try:
            events = [event_from_state_json(e) for e in obj["events"]]
            rows = {
                recipient: {event_id: RowShape.from_json(shape)
                            for event_id, shape in shapes.items()}
                for recipient, shapes in obj["rows"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(participant_id, f"malformed state ({type(exc).__name__})") from exc
        return state_from_parts(obj, events, rows)


def require_history(state: ParticipantState) -> None:
    """Raise :class:`HistoryNeeded` unless ``state`` holds the participant's whole history."""
    if not state.complete:
        raise HistoryNeeded(state.participant_id)


def with_history(current: ParticipantState, committed: ParticipantState) -> ParticipantState:
    """Complete ``current``, a state that holds only its head, with ``committed``: the whole
    state it was read from, as stored. ``current`` may have moved on since (a head-only state
    only gains events and rows, see the module docstring): its head stands, and its events and
    rows are added to the stored ones.
    """
    if current.participant_id != committed.participant_id:
        raise StateError(current.participant_id, "completed with another participant's state")
    if current.complete:
        return current
    rows = committed.rows
    for recipient, shapes in current.rows.items():
        held = rows.get(recipient)
        rows = rows.set(recipient, held.update(shapes) if held is not None else shapes)
    return ParticipantState(
        participant_id=current.participant_id,
        as_of=current.as_of,
        events=committed.events.update(current.events),
        consents=current.consents,
        orphan_revocations=current.orphan_revocations,
        deadlines=current.deadlines,
        rows=rows,
    )


def head_to_json(state: ParticipantState) -> dict[str, Any]:
    """The state's head: everything but its events and rows (small, rewritten every batch)."""
    return {
        "format": STATE_FORMAT,
        "participant_id": state.participant_id,
        "as_of": None if state.as_of is None else format_instant(state.as_of),
        "consents": [state.consents[key].to_json() for key in sorted(state.consents)],
        "orphan_revocations": {
            key: format_instant(state.orphan_revocations[key])
            for key in sorted(state.orphan_revocations)
        },
        "deadlines": [
            {
                "referral_event_id": d.referral_event_id,
                "referral_occurred_at": format_instant(d.referral_occurred_at),
                "due_at": format_instant(d.due_at),
            }
            for d in (state.deadlines[key] for key in sorted(state.deadlines))
        ],
    }


def state_from_parts(
    head: Mapping[str, Any],
    events: Iterable[Event],
    rows: Mapping[str, Mapping[str, RowShape]],
    *,
    complete: bool = True,
) -> ParticipantState:
    """Assemble a state from its head (:func:`head_to_json`), its events in arrival order and
    its rows' shapes per recipient; ``complete`` False if those are only part of them.

    Raises :class:`StateError` (naming the participant id only) if the head is not of a known
    format.
    """
    participant_id = str(head.get("participant_id", "")) if isinstance(head, Mapping) else ""
    if not isinstance(head, Mapping) or head.get("format") != STATE_FORMAT:
        raise StateError(participant_id, f"not a participant state of format {STATE_FORMAT}")
    try:
        deadlines = {
            d["referral_event_id"]: PendingDeadline(
                d["referral_event_id"],
                parse_instant(d["referral_occurred_at"]),
                parse_instant(d["due_at"]),
            )
            for d in head["deadlines"]
        }
        return ParticipantState(
            participant_id=participant_id,
            as_of=None if head["as_of"] is None else parse_instant(head["as_of"]),
            events=Map({event.event_id: event for event in events}),
            consents={c["consent_id"]: Consent.from_json(c) for c in head["consents"]},
            orphan_revocations={
                key: parse_instant(value) for key, value in head["orphan_revocations"].items()
            },
            deadlines=deadlines,
            rows=as_rows({recipient: shapes for recipient, shapes in rows.items() if shapes}),
            complete=complete,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(participant_id, f"malformed state ({type(exc).__name__})") from exc


def build_row(recipient: str, event: Event, shape: RowShape) -> ViewRow:
    """Return the :class:`ViewRow` ``recipient`` has for ``event`` given the row's shape."""
    payload = event.payload
    # by position, in ViewRow's field order: a named tuple built by keyword took twice as long
    # (decision 0012), and the projector builds about five per event
    return ViewRow(
        recipient,
        event.event_id,
        event.type,
        event.participant_id,
        event.occurred_at,
        event.source_partner or "",
        {name: payload[name] for name in shape.fields},
        shape.categories,
        shape.consent_ids,
        REDISCLOSURE_NOTICE if shape.notice else None,
    )


def event_to_state_json(event: Event) -> dict[str, Any]:
    """Return the JSON-native form of one event as a state holds it: payload values tagged
    losslessly (:func:`processors.timefmt.value_to_json`). Not the partners' JSON envelope,
    which is :func:`schemas.event.event_to_json`."""
    return {
        "event_id": event.event_id,
        "type": event.type,
        "participant_id": event.participant_id,
        "occurred_at": format_instant(event.occurred_at),
        "source_partner": event.source_partner,
        "payload": {name: value_to_json(value) for name, value in event.payload.items()},
    }


def _interned(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)


def event_from_state_json(obj: Mapping[str, Any]) -> Event:
    """Invert :func:`event_to_state_json`. The names every event of a participant repeats (its
    type, participant id, source) are interned, so a state read back holds each of them once."""
    return Event(
        event_id=obj["event_id"],
        type=sys.intern(obj["type"]),
        participant_id=sys.intern(obj["participant_id"]),
        occurred_at=parse_instant(obj["occurred_at"]),
        payload={name: value_from_json(value) for name, value in obj["payload"].items()},
        source_partner=_interned(obj["source_partner"]),
    )
