"""The decision table: own source, always, with_consent (+ consent conditions), floor, emitters,
and the 42 CFR Part 2 rule (a Part 2 record opens only under a complete Part 2 consent)."""

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
from tests.factories import participant_id

PERSON = participant_id("P1")  # the participant of these tests
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
        participant_id=PERSON,
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


def part2_consent(consent_id: str = "P2", **changes: Any) -> Consent:
    """A complete Part 2 consent: part2, recipients, the SUD program as discloser, an expiry."""
    complete: dict[str, Any] = {"part2": True,
                                "disclosing_programs": frozenset({"role:sud_treatment"})}
    return consent(consent_id, **{**complete, **changes})


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

#: A site that (wrongly) says ``always`` for Part 2 records, built past the loader.
ALWAYS_SUD_SITE = SitePolicy(
    name="always-sud",
    partners=SITE.partners,
    access={"case_management": {"SUD_TREATMENT": Access.ALWAYS}},
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
    ("with_consent, by role", SITE, "cm", "HOUSING", "house", [consent()], True, ()),
    ("part 2, complete consent", SITE, "cm", "SUD_TREATMENT", "sud", [part2_consent()], True,
     ("P2",)),
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
    # -- 42 CFR Part 2: only a complete Part 2 consent naming the source opens a Part 2 record
    ("part 2, ordinary consent listing SUD_TREATMENT", SITE, "cm", "SUD_TREATMENT", "sud",
     [consent()], False, ()),
    ("part 2, part2 flag without disclosing program (v1)", SITE, "cm", "SUD_TREATMENT", "sud",
     [consent(part2=True)], False, ()),
    ("part 2, names another program", SITE, "cm", "SUD_TREATMENT", "sud",
     [part2_consent(disclosing_programs=frozenset({"house", "role:mental_health"}))], False, ()),
    ("part 2, disclosing program by partner id", SITE, "pda", "SUD_TREATMENT", "sud",
     [part2_consent(disclosing_programs=frozenset({"sud"}))], True, ("P2",)),
    ("part 2, no expiry", SITE, "cm", "SUD_TREATMENT", "sud",
     [part2_consent(expires_at=None)], False, ()),
    ("part 2, expiry by program exit", SITE, "cm", "SUD_TREATMENT", "sud",
     [part2_consent(expires_at=None, expires_on_event="PROGRAM_EXIT")], True, ("P2",)),
    ("part 2, ended by program exit", SITE, "cm", "SUD_TREATMENT", "sud",
     [part2_consent(expires_at=None, expires_on_event="PROGRAM_EXIT", ended_at=NOW - DAY)],
     False, ()),
    ("part 2, expired", SITE, "cm", "SUD_TREATMENT", "sud", [part2_consent(expires_at=NOW)],
     False, ()),
    ("part 2, revoked", SITE, "cm", "SUD_TREATMENT", "sud",
     [part2_consent().revoked(NOW - DAY)], False, ()),
    ("part 2, does not name the recipient", SITE, "cm", "SUD_TREATMENT", "sud",
     [part2_consent(recipients=frozenset({"pda"}))], False, ()),
    ("part 2, only the complete one is listed", SITE, "cm", "SUD_TREATMENT", "sud",
     [consent("C1"), part2_consent("P2"), consent("C3", part2=True)], True, ("P2",)),
    ("part 2, SUD data recorded by case management names it as discloser", SITE, "pda",
     "SUD_TREATMENT", "cm", [part2_consent(disclosing_programs=frozenset({"cm"}))], True,
     ("P2",)),
    ("part 2, SUD data recorded by case management, SUD program named", SITE, "pda",
     "SUD_TREATMENT", "cm", [part2_consent()], False, ()),
    ("part 2, source unknown to the site opens nothing", SITE, "cm", "SUD_TREATMENT",
     "stranger", [part2_consent(disclosing_programs=frozenset({"stranger"}))], False, ()),
    ("part 2, own source needs no consent", SITE, "sud", "SUD_TREATMENT", "sud", [], True, ()),
    ("part 2, site 'always' is not enough", ALWAYS_SUD_SITE, "cm", "SUD_TREATMENT", "sud",
     [consent()], False, ()),
    ("part 2, site 'always' still takes a Part 2 consent", ALWAYS_SUD_SITE, "cm",
     "SUD_TREATMENT", "sud", [part2_consent()], True, ("P2",)),
    ("part 2, floor beats a complete Part 2 consent", SITE, "pd", "SUD_TREATMENT", "sud",
     [part2_consent()], False, ()),
    ("part 2, site never beats a complete Part 2 consent", SITE, "house", "SUD_TREATMENT", "sud",
     [part2_consent(recipients=frozenset({"house"}))], False, ()),
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


def test_effective_access_never_says_always_for_part2_records() -> None:
    assert effective_access(ALWAYS_SUD_SITE, "case_management", "SUD_TREATMENT") is (
        Access.WITH_CONSENT)
    assert effective_access(SITE, "case_management", "SUD_TREATMENT") is Access.WITH_CONSENT


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
    ("SUD row by Part 2 consent", "cm", "sud", "SUD_TREATMENT", [part2_consent()], True),
    ("housing row on a v1-style part2 consent", "pda", "house", "HOUSING",
     [consent(part2=True, disclosing_programs=frozenset())], True),
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
    return Event("00000000-0000-4000-8000-000000000001", event_type, PERSON, T0, {}, source)


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
