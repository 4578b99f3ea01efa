"""Consent.covers: every condition, one row of the table each."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from processors.consent import Consent, ConsentException, consent_from_event
from processors.errors import PolicyError
from processors.site import Partner
from schemas.event import Event

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DEFENDER = Partner("pda", "defender", "Defender", "legal_defense")
CASE_MANAGER = Partner("cm", "case_management", "Case management", "care_coordination")
HOUSING = Partner("house", "housing", "Housing", "care_coordination")

BASE = Consent(
    consent_id="C1",
    participant_id="P1",
    granted_event_id="e-grant",
    granted_by="cm",
    recipients=frozenset({"pda", "role:case_management"}),
    categories=frozenset({"HOUSING", "SUD_TREATMENT"}),
    purposes=frozenset({"legal_defense", "care_coordination"}),
    valid_from=T0,
    expires_at=T0 + 30 * DAY,
    exceptions=(),
    part2=True,
    form_sha256="ab" * 32,
)

COVERS = [
    ("named by partner id", BASE, DEFENDER, "HOUSING", "legal_defense", T0 + DAY, True),
    ("named by role", BASE, CASE_MANAGER, "HOUSING", "care_coordination", T0 + DAY, True),
    ("not named", BASE, HOUSING, "HOUSING", "care_coordination", T0 + DAY, False),
    ("category not listed", BASE, DEFENDER, "MEDICAL", "legal_defense", T0 + DAY, False),
    ("purpose not listed", BASE, DEFENDER, "HOUSING", "prosecution_decision", T0 + DAY, False),
    ("purpose spelled upper case", BASE, DEFENDER, "HOUSING", "LEGAL_DEFENSE", T0 + DAY, True),
    ("before valid_from", BASE, DEFENDER, "HOUSING", "legal_defense", T0 - DAY, False),
    ("at valid_from", BASE, DEFENDER, "HOUSING", "legal_defense", T0, True),
    ("just before expiry", BASE, DEFENDER, "HOUSING", "legal_defense",
     T0 + 30 * DAY - timedelta(microseconds=1), True),
    ("at expiry", BASE, DEFENDER, "HOUSING", "legal_defense", T0 + 30 * DAY, False),
    ("no expiry", replace(BASE, expires_at=None), DEFENDER, "HOUSING", "legal_defense",
     T0 + 3000 * DAY, True),
    ("before revocation", BASE.revoked(T0 + 5 * DAY), DEFENDER, "HOUSING", "legal_defense",
     T0 + 4 * DAY, True),
    ("at revocation", BASE.revoked(T0 + 5 * DAY), DEFENDER, "HOUSING", "legal_defense",
     T0 + 5 * DAY, False),
    ("exception by id", replace(BASE, exceptions=(
        ConsentException(frozenset({"pda"}), frozenset({"SUD_TREATMENT"})),)),
     DEFENDER, "SUD_TREATMENT", "legal_defense", T0 + DAY, False),
    ("exception by role", replace(BASE, exceptions=(
        ConsentException(frozenset({"role:defender"}), frozenset({"SUD_TREATMENT"})),)),
     DEFENDER, "SUD_TREATMENT", "legal_defense", T0 + DAY, False),
    ("exception for another category", replace(BASE, exceptions=(
        ConsentException(frozenset({"pda"}), frozenset({"SUD_TREATMENT"})),)),
     DEFENDER, "HOUSING", "legal_defense", T0 + DAY, True),
    ("exception for another recipient", replace(BASE, exceptions=(
        ConsentException(frozenset({"cm"}), frozenset({"HOUSING"})),)),
     DEFENDER, "HOUSING", "legal_defense", T0 + DAY, True),
    ("exception without recipients denies everyone", replace(BASE, exceptions=(
        ConsentException(frozenset(), frozenset({"HOUSING"})),)),
     DEFENDER, "HOUSING", "legal_defense", T0 + DAY, False),
    ("exception without categories denies all", replace(BASE, exceptions=(
        ConsentException(frozenset({"pda"}), frozenset()),)),
     DEFENDER, "HOUSING", "legal_defense", T0 + DAY, False),
    ("empty recipients cover nobody", replace(BASE, recipients=frozenset()),
     DEFENDER, "HOUSING", "legal_defense", T0 + DAY, False),
    ("empty purposes cover nothing", replace(BASE, purposes=frozenset()),
     DEFENDER, "HOUSING", "legal_defense", T0 + DAY, False),
]


@pytest.mark.parametrize(
    ("consent", "partner", "category", "purpose", "now", "expected"),
    [case[1:] for case in COVERS],
    ids=[case[0] for case in COVERS],
)
def test_covers(
    consent: Consent, partner: Partner, category: str, purpose: str, now: datetime, expected: bool
) -> None:
    assert consent.covers(partner, category, purpose, now) is expected


def test_an_earlier_revocation_stands() -> None:
    early = BASE.revoked(T0 + DAY)
    assert early.revoked(T0 + 2 * DAY).revoked_at == T0 + DAY
    assert BASE.revoked(T0 + 2 * DAY).revoked(T0 + DAY).revoked_at == T0 + DAY


def test_json_round_trip() -> None:
    consent = replace(
        BASE.revoked(T0 + DAY),
        exceptions=(ConsentException(frozenset({"pda"}), frozenset({"SUD_TREATMENT"})),),
    )
    assert Consent.from_json(consent.to_json()) == consent


def _grant(payload: dict[str, object]) -> Event:
    return Event("e-1", "ConsentGranted", "P1", T0, payload, "cm")


def test_consent_from_event_reads_every_field_and_normalizes_purposes() -> None:
    consent = consent_from_event(_grant({
        "consent_id": "C9",
        "recipients": ["pda", "role:housing"],
        "categories": ["HOUSING"],
        "purposes": ["CARE_COORDINATION"],
        "valid_from": T0 + DAY,
        "expires_at": None,
        "exceptions": [{"recipients": ["pda"], "categories": ["HOUSING"]}],
        "part2": False,
        "form_sha256": "cd" * 32,
    }))
    assert consent.consent_id == "C9"
    assert consent.purposes == frozenset({"care_coordination"})
    assert consent.valid_from == T0 + DAY
    assert consent.expires_at is None
    assert consent.exceptions == (ConsentException(frozenset({"pda"}), frozenset({"HOUSING"})),)
    assert consent.granted_by == "cm"
    assert consent.granted_event_id == "e-1"


def test_consent_without_id_is_an_error_naming_the_event_only() -> None:
    with pytest.raises(PolicyError, match="e-1"):
        consent_from_event(_grant({"recipients": ["pda"]}))
