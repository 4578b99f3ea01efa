"""Intake deadlines for arrest diversion: when one starts, when intake meets it, when it is missed.

An arrest-diversion ``ReferralMade`` with ``charges_held`` starts a deadline of the site's
``intake_deadline_days``. An ``IntakeCompleted`` meets it if it names that referral and
occurred by the due instant, or names no referral and occurred between the referral and the due
instant. When time passes the due instant with no meeting intake known, the hub derives an
``IntakeDeadlineMissed`` event with a deterministic id (uuid5 of the referral's event_id, in
the UUID version reserved for derived events, which no partner may use), so a replay derives
the very same event and no partner event can take its id.

What the prosecutor needs is *whether the deadline was met*, and that is a fact about when the
intake occurred, not about when the hub heard of it. So a miss is provisional: when an intake
that meets the deadline arrives after the miss was derived (late data entry by case
management), or a referral arrives after its intake, the ``IntakeDeadlineMissed`` row is
retracted for every recipient and the deadline counts as met. The retraction is an ordinary
view change (an auditor's replay shows it). An intake that occurred
after the due instant does not undo a miss: the view shows both, the miss and the late intake.

With this rule the deadline rows are a function of the participant's set of events and the
instant of the view, whatever order the events arrived in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from processors.site import HUB
from processors.state import PendingDeadline
from schemas.event import Event, derived_event_id

REFERRAL_TYPE = "ReferralMade"
INTAKE_TYPE = "IntakeCompleted"
MISSED_TYPE = "IntakeDeadlineMissed"
ARREST_DIVERSION = "ARREST_DIVERSION"
#: Namespace of derived IntakeDeadlineMissed event ids (fixed forever: ids must replay equal).
MISSED_NAMESPACE = uuid.UUID("6f0b4a53-29c1-5d0e-9a55-6c1e1ad0c0de")


def deadline_for(event: Event, intake_deadline_days: int) -> PendingDeadline | None:
    """Return the deadline an event starts, or None (only arrest diversion with charges held)."""
    if event.type != REFERRAL_TYPE:
        return None
    payload = event.payload
    if payload.get("door") != ARREST_DIVERSION or payload.get("charges_held") is not True:
        return None
    return PendingDeadline(
        referral_event_id=event.event_id,
        referral_occurred_at=event.occurred_at,
        due_at=event.occurred_at + timedelta(days=intake_deadline_days),
    )


def intake_meets(intake: Event, deadline: PendingDeadline) -> bool:
    """Return True if ``intake`` (an IntakeCompleted) meets ``deadline``."""
    if intake.type != INTAKE_TYPE or intake.occurred_at > deadline.due_at:
        return False
    linked = intake.payload.get("referral_event_id")
    if linked is not None:
        return bool(linked == deadline.referral_event_id)
    return deadline.referral_occurred_at <= intake.occurred_at


def already_met(deadline: PendingDeadline, history: Iterable[Event]) -> bool:
    """Return True if an intake already in ``history`` meets ``deadline`` (late referral)."""
    return any(intake_meets(event, deadline) for event in history if event.type == INTAKE_TYPE)


def missed_deadline(missed: Event, history: Mapping[str, Event]) -> PendingDeadline | None:
    """Return the deadline a derived IntakeDeadlineMissed event records, or None.

    The referral must be in ``history`` (it always is for a derived miss); the due instant is
    the one the miss was derived with.
    """
    referral = history.get(str(missed.payload.get("referral_event_id")))
    due_at = missed.payload.get("due_at")
    if referral is None or not isinstance(due_at, datetime):
        return None
    return PendingDeadline(referral.event_id, referral.occurred_at, due_at)


def misses_met_by(intake: Event, history: Mapping[str, Event]) -> list[str]:
    """Return the event_ids of derived misses in ``history`` that ``intake`` shows were met.

    These are the misses an on-time intake reported late must retract.
    """
    met: list[str] = []
    for event in history.values():
        if event.type != MISSED_TYPE or event.source_partner != HUB:
            continue
        deadline = missed_deadline(event, history)
        if deadline is not None and intake_meets(intake, deadline):
            met.append(event.event_id)
    return met


def missed_event(participant_id: str, deadline: PendingDeadline) -> Event:
    """Return the hub-derived IntakeDeadlineMissed event for ``deadline`` (deterministic id)."""
    return Event(
        event_id=derived_event_id(MISSED_NAMESPACE, deadline.referral_event_id),
        type=MISSED_TYPE,
        participant_id=participant_id,
        occurred_at=deadline.due_at,
        payload={"referral_event_id": deadline.referral_event_id, "due_at": deadline.due_at},
        source_partner=HUB,
    )


def due_deadlines(
    deadlines: Iterable[PendingDeadline], now: datetime
) -> list[PendingDeadline]:
    """Return the deadlines that have passed at ``now`` (strictly after due), earliest first."""
    return sorted(
        (d for d in deadlines if now > d.due_at),
        key=lambda d: (d.due_at, d.referral_event_id),
    )


def derive_deadlines(
    participant_id: str, events: list[Event], intake_deadline_days: int, now: datetime
) -> tuple[dict[str, PendingDeadline], list[Event]]:
    """Return (pending deadlines, derived misses) as the set of ``events`` determines them."""
    intakes = [event for event in events if event.type == INTAKE_TYPE]
    pending: dict[str, PendingDeadline] = {}
    missed: list[PendingDeadline] = []
    for event in events:
        deadline = deadline_for(event, intake_deadline_days)
        if deadline is None or already_met(deadline, intakes):
            continue
        if now > deadline.due_at:
            missed.append(deadline)
        else:
            pending[deadline.referral_event_id] = deadline
    missed.sort(key=lambda d: (d.due_at, d.referral_event_id))
    return pending, [missed_event(participant_id, deadline) for deadline in missed]
