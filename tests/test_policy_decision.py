"""The decision table: own source, always, with_consent (+ consent conditions), floor, emitters."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from processors.consent import Consent, ConsentException
from processors.policy import (
    REDISCLOSURE_NOTICE,
    Rejection,
    admission,
    category_basis,
    decide_row,
    effective_access,
)
from processors.site import Access, Partner, SitePolicy, parse_site
from schemas.catalog import load_catalog
from schemas.event import Event

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOW = T0 + 10 * DAY

SITE = parse_site({
    "intake_deadline_days": 14,
    "purposes": ["diversion_referral", "prosecution_decision", "legal_defense",
                 "care_coordination", "treatment", "program_operations"],
    "partners": [
        {"id": "pd", "role": "police", "name": "PD", "purpose": "diversion_referral"},
        {"id": "pao", "role": "prosecutor", "name": "PAO", "purpose": "prosecution_decision"},
        {"id": "pda", "role": "defender", "name": "PDA", "purpose": "legal_defense"},
        {"id": "cm", "role": "case_management", "name": "CM", "purpose": "care_coordination"},
        {"id": "house", "role": "housing", "name": "Housing", "purpose": "care_coordination"},
        {"id": "sud", "role": "sud_treatment", "name": "SUD", "purpose": "treatment"},
        {"id": "coord", "role": "coordinator", "name": "Coord", "purpose": "program_operations"},
    ],
    "access": {
        "police": {"PROGRAM_STATUS": "always", "REFERRAL": "always", "HOUSING": "with_consent"},
        "prosecutor": {"PROGRAM_STATUS": "always", "LEGAL_CASE": "always"},
        "defender": {"LEGAL_CASE": "always", "HOUSING": "with_consent",
                     "SUD_TREATMENT": "with_consent", "PROGRAM_STATUS": "with_consent"},
        "case_management": {"HOUSING": "always", "SUD_TREATMENT": "with_consent",
                            "PROGRAM_STATUS": "always"},
        "housing": {"HOUSING": "always"},
    },
})


def partner(partner_id: str) -> Partner:
    found = SITE.partner(partner_id)
    assert found is not None
    return found


def consent(consent_id: str = "C1", **changes: Any) -> Consent:
    base = Consent(
        consent_id=consent_id,
        participant_id="P1",
        granted_event_id="e-" + consent_id,
        granted_by="cm",
        recipients=frozenset({"pda", "pd", "pao", "role:case_management"}),
        categories=frozenset({"HOUSING", "SUD_TREATMENT", "MEDICAL", "PROGRAM_STATUS"}),
        purposes=frozenset({"legal_defense", "care_coordination", "diversion_referral",
                            "prosecution_decision"}),
        valid_from=T0,
        expires_at=T0 + 30 * DAY,
        exceptions=(),
        part2=False,
        form_sha256="ab" * 32,
    )
    return replace(base, **changes)


#: A site file that (wrongly) opens health data to enforcement roles, built past the loader.
LOOSE_SITE = SitePolicy(
    name="loose",
    partners=SITE.partners,
    access={
        "police": {"SUD_TREATMENT": Access.ALWAYS, "MEDICAL": Access.WITH_CONSENT},
        "prosecutor": {"MENTAL_HEALTH": Access.ALWAYS},
    },
    intake_deadline_days=14,
    purposes=SITE.purposes,
)

BASIS = [
    # name, site, recipient, category, source, consents, visible, consent_ids
    ("own source, site silent", SITE, "sud", "SUD_TREATMENT", "sud", [], True, ()),
    ("own source, site never", SITE, "house", "LEGAL_CASE", "house", [], True, ()),
    ("always", SITE, "cm", "HOUSING", "house", [], True, ()),
    ("always needs no consent id", SITE, "cm", "HOUSING", "house", [consent()], True, ()),
    ("never (unlisted) even with consent", SITE, "house", "SUD_TREATMENT", "sud",
     [consent(recipients=frozenset({"house"}))], False, ()),
    ("with_consent, none", SITE, "pda", "HOUSING", "house", [], False, ()),
    ("with_consent, covering", SITE, "pda", "HOUSING", "house", [consent()], True, ("C1",)),
    ("with_consent, by role", SITE, "cm", "SUD_TREATMENT", "sud", [consent()], True, ("C1",)),
    ("with_consent, two covering", SITE, "pda", "HOUSING", "house",
     [consent("C2"), consent("C1")], True, ("C1", "C2")),
    ("with_consent, other category", SITE, "pda", "HOUSING", "house",
     [consent(categories=frozenset({"MEDICAL"}))], False, ()),
    ("with_consent, other purpose", SITE, "pda", "HOUSING", "house",
     [consent(purposes=frozenset({"treatment"}))], False, ()),
    ("with_consent, other recipient", SITE, "pda", "HOUSING", "house",
     [consent(recipients=frozenset({"cm"}))], False, ()),
    ("with_consent, expired", SITE, "pda", "HOUSING", "house",
     [consent(expires_at=NOW)], False, ()),
    ("with_consent, not yet valid", SITE, "pda", "HOUSING", "house",
     [consent(valid_from=NOW + DAY)], False, ()),
    ("with_consent, revoked", SITE, "pda", "HOUSING", "house",
     [consent().revoked(NOW - DAY)], False, ()),
    ("with_consent, exception", SITE, "pda", "HOUSING", "house",
     [consent(exceptions=(ConsentException(frozenset({"pda"}), frozenset({"HOUSING"})),))],
     False, ()),
    ("with_consent, one revoked one active", SITE, "pda", "HOUSING", "house",
     [consent("C1").revoked(NOW - DAY), consent("C2")], True, ("C2",)),
    ("floor beats consent", SITE, "pao", "MEDICAL", "cm", [consent()], False, ()),
    ("floor beats site file (always)", LOOSE_SITE, "pd", "SUD_TREATMENT", "sud", [], False, ()),
    ("floor beats site file + consent", LOOSE_SITE, "pd", "MEDICAL", "cm", [consent()],
     False, ()),
    ("floor beats site file (prosecutor)", LOOSE_SITE, "pao", "MENTAL_HEALTH", "mh", [],
     False, ()),
    ("floor beats own source", SITE, "pd", "MENTAL_HEALTH", "pd", [], False, ()),
    ("police with_consent non-health", SITE, "pd", "HOUSING", "house", [consent()], True,
     ("C1",)),
]


@pytest.mark.parametrize(
    ("site", "recipient", "category", "source", "consents", "visible", "consent_ids"),
    [case[1:] for case in BASIS],
    ids=[case[0] for case in BASIS],
)
def test_category_basis(
    site: SitePolicy,
    recipient: str,
    category: str,
    source: str,
    consents: list[Consent],
    visible: bool,
    consent_ids: tuple[str, ...],
) -> None:
    basis = category_basis(site, partner(recipient), category, source, consents, NOW)
    assert basis.visible is visible
    assert basis.consent_ids == consent_ids


def test_effective_access_applies_floor_to_any_site() -> None:
    assert effective_access(LOOSE_SITE, "police", "SUD_TREATMENT") is Access.NEVER
    assert effective_access(SITE, "case_management", "HOUSING") is Access.ALWAYS
    assert effective_access(SITE, "housing", "LEGAL_CASE") is Access.NEVER


PAYLOAD = MappingProxyType({"status": "HOUSED", "provider": "Cedar", "secret": "x"})
FIELD_CATEGORIES = {"status": "HOUSING", "provider": "PROGRAM_STATUS"}  # "secret" unlabelled


def test_row_hidden_when_row_category_hidden() -> None:
    decision = decide_row(
        SITE, partner("pao"), "house", "HOUSING", PAYLOAD, FIELD_CATEGORIES, [], NOW
    )
    assert decision is None


def test_row_keeps_only_visible_fields_in_payload_order() -> None:
    decision = decide_row(
        SITE, partner("house"), "cm", "HOUSING", PAYLOAD, FIELD_CATEGORIES, [], NOW
    )
    assert decision is not None
    assert decision.fields == ("status",)
    assert decision.categories == ("HOUSING",)
    assert decision.consent_ids == ()
    assert decision.needs_notice is False


def test_row_lists_consents_behind_any_part_and_unlabelled_fields_stay_hidden() -> None:
    decision = decide_row(
        SITE, partner("pda"), "house", "HOUSING", PAYLOAD, FIELD_CATEGORIES, [consent()], NOW
    )
    assert decision is not None
    assert decision.fields == ("status", "provider")
    assert decision.categories == ("HOUSING", "PROGRAM_STATUS")
    assert decision.consent_ids == ("C1",)


def test_own_source_sees_unlabelled_fields_never() -> None:
    decision = decide_row(
        SITE, partner("house"), "house", "HOUSING", PAYLOAD, FIELD_CATEGORIES, [], NOW
    )
    assert decision is not None
    assert "secret" not in decision.fields


NOTICE = [
    ("SUD row to own source", "sud", "sud", "SUD_TREATMENT", [], True),
    ("SUD row by consent", "cm", "sud", "SUD_TREATMENT", [consent()], True),
    ("housing row on a part2 consent", "pda", "house", "HOUSING", [consent(part2=True)], True),
    ("housing row on an ordinary consent", "pda", "house", "HOUSING", [consent()], False),
    ("housing row by site rule, part2 consent exists", "cm", "house", "HOUSING",
     [consent(part2=True)], False),
]


@pytest.mark.parametrize(
    ("recipient", "source", "row_category", "consents", "needs_notice"),
    [case[1:] for case in NOTICE],
    ids=[case[0] for case in NOTICE],
)
def test_part2_notice(
    recipient: str, source: str, row_category: str, consents: list[Consent], needs_notice: bool
) -> None:
    categories = {"status": row_category}
    decision = decide_row(
        SITE, partner(recipient), source, row_category, {"status": "x"}, categories, consents, NOW
    )
    assert decision is not None
    assert decision.needs_notice is needs_notice


def test_notice_is_the_2_32_statement() -> None:
    assert REDISCLOSURE_NOTICE.startswith("This record which has been disclosed to you")
    assert "42 CFR part 2" in REDISCLOSURE_NOTICE
    assert "NOT sufficient" in REDISCLOSURE_NOTICE


def _event(event_type: str, source: str | None) -> Event:
    return Event("00000000-0000-4000-8000-000000000001", event_type, "P1", T0, {}, source)


ADMISSION = [
    ("case management grants consent", "ConsentGranted", "cm", None),
    ("police may not record consent", "ConsentGranted", "pd", Rejection.EMITTER_NOT_ALLOWED),
    ("police may not record SUD encounters", "ServiceEncounter", "pd",
     Rejection.EMITTER_NOT_ALLOWED),
    ("unknown partner", "ContactLogged", "stranger", Rejection.UNKNOWN_PARTNER),
    ("no source", "ContactLogged", None, Rejection.UNKNOWN_PARTNER),
    ("outside event posing as the hub", "IntakeDeadlineMissed", "hub", Rejection.UNKNOWN_PARTNER),
    ("unknown type", "Gossip", "cm", Rejection.UNKNOWN_TYPE),
]


@pytest.mark.parametrize(
    ("event_type", "source", "expected"),
    [case[1:] for case in ADMISSION],
    ids=[case[0] for case in ADMISSION],
)
def test_admission(event_type: str, source: str | None, expected: Rejection | None) -> None:
    assert admission(SITE, load_catalog(), _event(event_type, source)) is expected
