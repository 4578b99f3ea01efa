"""Offline replay: run an event log through the projector and return the resulting view.

Each event is projected with ``now`` = its own ``occurred_at`` (a participant's time never runs
backwards, see :mod:`processors.projector`). At the end every participant is ticked to one
common instant — ``at`` if given, else the latest ``occurred_at`` in the log — so consent
expiries and missed deadlines of quiet participants are applied too and the view is a
consistent snapshot. With ``at``, events that occurred after it are ignored.

The reference order is ``(occurred_at, event_id)``, but the result does not depend on it: the
projector's view is a function of each participant's set of events and the final instant, so
the live pipeline (events in arrival order, each at its receive time) ticked to ``at`` shows
exactly these rows.

Memory holds one state per participant and the rows kept, never the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from processors.projector import ParticipantState, Projector
from processors.view import ViewChange, ViewRow, apply_changes
from schemas.event import Event

View = dict[str, dict[str, ViewRow]]


def project_events(
    events: Iterable[Event],
    projector: Projector,
    at: datetime | None = None,
    recipient: str | None = None,
) -> View:
    """Replay ``events`` and return the view: recipient -> event_id -> row.

    ``recipient`` keeps only that recipient's rows (the others are still computed, never
    stored). Deterministic: the same log, site and catalog give the same view.
    """
    states: dict[str, ParticipantState] = {}
    view: View = {}
    latest: datetime | None = None
    for event in events:
        if at is not None and event.occurred_at > at:
            continue
        if latest is None or event.occurred_at > latest:
            latest = event.occurred_at
        state, changes = projector.project(
            states.get(event.participant_id), event, event.occurred_at
        )
        states[event.participant_id] = state
        _apply(view, changes, recipient)
    final = at if at is not None else latest
    if final is not None:
        for participant_id in sorted(states):
            state, changes = projector.tick(states[participant_id], final)
            states[participant_id] = state
            _apply(view, changes, recipient)
    return view


def rows_for(view: View, recipient: str) -> list[ViewRow]:
    """Return ``recipient``'s rows sorted by (occurred_at, event_id)."""
    return sorted(view.get(recipient, {}).values(), key=lambda row: (row.occurred_at, row.event_id))


def _apply(view: View, changes: list[ViewChange], recipient: str | None) -> None:
    if recipient is not None:
        changes = [change for change in changes if change.recipient == recipient]
    apply_changes(view, changes)
