"""Intake deadlines for arrest diversion: when one starts, when intake meets it, when it is missed.

An arrest-diversion ``ReferralMade`` with ``charges_held`` starts a deadline of the site's
``intake_deadline_days``. An ``IntakeCompleted`` meets it if it names that referral and
occurred by the due instant, or names no referral and occurred between the referral and the due
instant. When time passes the due instant with the deadline still pending, the hub derives an
``IntakeDeadlineMissed`` event with a deterministic id (uuid5 of the referral's event_id), so a
replay derives the very same event. A deadline once missed stays missed: a later intake is
shown as what it is, an intake after the deadline.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from processors.site import HUB
from processors.state import PendingDeadline
from schemas.event import Event

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


def missed_event(participant_id: str, deadline: PendingDeadline) -> Event:
    """Return the hub-derived IntakeDeadlineMissed event for ``deadline`` (deterministic id)."""
    return Event(
        event_id=str(uuid.uuid5(MISSED_NAMESPACE, deadline.referral_event_id)),
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
