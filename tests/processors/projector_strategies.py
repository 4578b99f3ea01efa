"""Hypothesis strategies for the projector's properties: random sites, payloads, consents and
participant histories over the real catalog."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from processors.site import Access, Partner, SitePolicy
from schemas.catalog import CATEGORIES, ROLES, load_catalog
from schemas.event import Event
from tests.factories import participant_id

PERSON = participant_id("P1")  # the participant of these tests
CATALOG = load_catalog()
T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
PURPOSES = ("care_coordination", "legal_defense")
CONSENT_IDS = ("C0", "C1")
PARTNER_IDS = ("p0", "p1", "p2", "p3", "p4")
ALL_RECIPIENTS = (*PARTNER_IDS, *(f"role:{r}" for r in ROLES if r != "hub"))
BIASED_ACCESS = (Access.NEVER, Access.WITH_CONSENT, Access.WITH_CONSENT, Access.ALWAYS)
PARTNER_ROLES = tuple(role for role in ROLES if role != "hub")
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

DATA_TYPES = (
    "ReferralMade", "IntakeCompleted", "ServiceEncounter", "ServiceEnrolled",
    "HousingStatusChanged", "ChargesFiled", "AssessmentCompleted", "ContactLogged",
    "IdentifierLinked", "BenefitsEnrolled", "ParticipantExited",
)
#: Who a consent names as disclosing programs: mostly the SUD role, sometimes partners.
DISCLOSERS = ("role:sud_treatment", "role:sud_treatment", *PARTNER_IDS, "role:case_management",
              "role:medical")
EXPIRY_EVENTS = (None, None, "PROGRAM_EXIT")


def part2_elements(draw: st.DrawFn, broad: bool) -> dict[str, Any]:
    """The Part 2 keys of a grant: complete, partial or absent (as a v1 grant decodes)."""
    if draw(st.integers(0, 5)) == 0:
        return {}  # a payload built without the v2 keys
    return {
        "part2": draw(st.booleans()) or broad,
        "disclosing_programs": list(DISCLOSERS) if broad else draw(
            st.lists(st.sampled_from(DISCLOSERS), max_size=2, unique=True)),
        "expires_on_event": draw(st.sampled_from(EXPIRY_EVENTS)),
    }
SERVICE_TYPES = ("HOUSING", "SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL", "BENEFITS")


@st.composite
def sites(draw: st.DrawFn) -> SitePolicy:
    """Random sites, built past the loader: they may even try to open health data to police."""
    roles = ["case_management", *[draw(st.sampled_from(PARTNER_ROLES)) for _ in PARTNER_IDS[1:]]]
    partners = tuple(
        Partner(pid, role, pid.upper(), draw(st.sampled_from(PURPOSES)),
                part2_program=pid != "p0" and draw(st.integers(0, 4)) == 0)
        for pid, role in zip(PARTNER_IDS, roles, strict=True)
    )
    access = {
        role: {category: draw(st.sampled_from(BIASED_ACCESS)) for category in CATEGORIES}
        for role in sorted(set(roles))
    }
    return SitePolicy("random", partners, access, draw(st.integers(7, 30)), PURPOSES)


def payload_for(type_name: str, draw: st.DrawFn) -> dict[str, Any]:
    payload: dict[str, Any] = {spec.name: "x" for spec in CATALOG.latest(type_name).fields}
    if type_name == "ReferralMade":
        payload["door"] = draw(st.sampled_from(("ARREST_DIVERSION", "SOCIAL_CONTACT")))
        payload["charges_held"] = draw(st.booleans())
    if type_name == "IntakeCompleted":
        payload["referral_event_id"] = None
    if "service_type" in payload:
        payload["service_type"] = draw(st.sampled_from(SERVICE_TYPES))
    return payload


def hours_after(start: datetime, low: int, high: int) -> st.SearchStrategy[datetime]:
    return st.builds(lambda hours: start + timedelta(hours=hours), st.integers(low, high))


@dataclass(frozen=True)
class Step:
    event: Event | None  # None: a clock tick
    now: datetime


@st.composite
def histories(draw: st.DrawFn, length: int = 14) -> list[Step]:
    steps: list[Step] = []
    at = T0
    events: list[Event] = []
    for index in range(draw(st.integers(1, length))):
        at += timedelta(hours=draw(st.integers(0, 240)))
        kind = draw(st.sampled_from(("data", "data", "grant", "revoke", "redeliver", "tick")))
        source = draw(st.sampled_from((*PARTNER_IDS, "p0", "p0", "stranger")))
        event_id = str(uuid.UUID(int=index + 1, version=4))
        if kind == "tick":
            steps.append(Step(None, at))
            continue
        if kind == "redeliver" and events:
            steps.append(Step(draw(st.sampled_from(events)), at))
            continue
        if kind == "grant":
            broad = draw(st.booleans())  # broad grants make consent-dependent rows common
            subset = st.lists(st.sampled_from(CATEGORIES), max_size=5, unique=True)
            who = st.lists(st.sampled_from(ALL_RECIPIENTS), max_size=4, unique=True)
            payload: dict[str, Any] = {
                "consent_id": draw(st.sampled_from(CONSENT_IDS)),
                "recipients": list(ALL_RECIPIENTS) if broad else draw(who),
                "categories": list(CATEGORIES) if broad else draw(subset),
                "purposes": list(PURPOSES) if broad else draw(
                    st.lists(st.sampled_from(PURPOSES), max_size=2, unique=True)),
                "valid_from": at + timedelta(hours=draw(st.integers(-48, 96))),
                "expires_at": draw(st.one_of(st.none(), hours_after(at, 1, 600))),
                "exceptions": [] if broad else draw(st.lists(
                    st.fixed_dictionaries({"recipients": who, "categories": subset}), max_size=1)),
                "part2": draw(st.booleans()),
                "form_sha256": "ab" * 32,
                **part2_elements(draw, broad),
            }
            event = Event(event_id, "ConsentGranted", PERSON, at, payload, source)
        elif kind == "revoke":
            consent_id = draw(st.sampled_from(CONSENT_IDS))
            event = Event(event_id, "ConsentRevoked", PERSON, at, {"consent_id": consent_id},
                          source)
        else:
            type_name = draw(st.sampled_from(DATA_TYPES))
            event = Event(event_id, type_name, PERSON, at, payload_for(type_name, draw), source)
        events.append(event)
        steps.append(Step(event, at))
    return steps


