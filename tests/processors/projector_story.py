"""One participant's story for the projector rule tests: the example site's partners, event
builders, and a :class:`Run` that feeds events through one projector."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.projector import ParticipantState, Projector, ViewChange
from processors.site import load_site
from schemas.catalog import load_catalog
from schemas.event import Event
from tests.factories import SITE_FILE, participant_id

PERSON = participant_id("P1")  # the participant of these tests
EXAMPLE = SITE_FILE
SITE = load_site(EXAMPLE)
CATALOG = load_catalog()
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)

PD, PAO, PDA, CM = "evergreen-pd", "county-pao", "defender-assoc", "harbor-cm"
HOUSE, SUD, MH, COORD = "cedar-housing", "riverbend-sud", "northside-mh", "lead-coordinator"

_counter = iter(range(1, 10**9))


def event(type_: str, source: str | None, at: datetime, **payload: Any) -> Event:
    event_id = str(uuid.UUID(int=next(_counter), version=4))
    return Event(event_id, type_, PERSON, at, payload, source)


def referral(at: datetime, door: str = "ARREST_DIVERSION", held: bool = True) -> Event:
    return event("ReferralMade", PD, at, door=door, offense_category="DRUG_POSSESSION",
                 charges_held=held, referring_officer="4411", area="East", warm_handoff_at=None)


def intake(at: datetime, referral_event_id: str | None = None) -> Event:
    return event("IntakeCompleted", CM, at, referral_event_id=referral_event_id,
                 intake_site="Harbor St", preferred_name="Sam Sample", date_of_birth=None,
                 phone="555-0100")


def encounter(at: datetime, service_type: str, source: str) -> Event:
    return event("ServiceEncounter", source, at, service_type=service_type, provider="Riverbend",
                 duration_minutes=50, notes="engaged, on plan")


def grant(at: datetime, consent_id: str = "C1", **changes: Any) -> Event:
    payload: dict[str, Any] = {
        "consent_id": consent_id,
        "recipients": [PDA, "role:case_management"],
        "categories": ["SUD_TREATMENT", "HOUSING"],
        "purposes": ["legal_defense", "care_coordination"],
        "valid_from": at,
        "expires_at": at + 90 * DAY,
        "exceptions": [],
        "part2": True,
        "disclosing_programs": [SUD],
        "expires_on_event": None,
        "form_sha256": "ab" * 32,
    }
    payload.update(changes)
    return event("ConsentGranted", CM, at, **payload)


def exit_(at: datetime) -> Event:
    return event("ParticipantExited", CM, at, reason="GRADUATED")


def revoke(at: datetime, consent_id: str = "C1") -> Event:
    return event("ConsentRevoked", CM, at, consent_id=consent_id)


class Run:
    """Feeds events through one projector, keeping the state and every change."""

    def __init__(self) -> None:
        self.projector = Projector(SITE, CATALOG)
        self.state: ParticipantState | None = None
        self.changes: list[ViewChange] = []

    def project(self, ev: Event, now: datetime | None = None) -> list[ViewChange]:
        self.state, changes = self.projector.project(self.state, ev, now or ev.occurred_at)
        self.changes.extend(changes)
        return changes

    def tick(self, now: datetime) -> list[ViewChange]:
        assert self.state is not None
        self.state, changes = self.projector.tick(self.state, now)
        self.changes.extend(changes)
        return changes

    def rows(self, recipient: str) -> dict[str, Any]:
        assert self.state is not None
        return self.state.view_rows().get(recipient, {})


def recipients(changes: list[ViewChange], kind: str = "upsert") -> set[str]:
    return {change.recipient for change in changes if change.kind == kind}


