"""Consent.covers: every condition, one row of the table each; the Part 2 elements and rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.consent import (
    Consent,
    ConsentException,
    ConsentState,
    check_part2_elements,
    consent_from_event,
)
from processors.errors import PolicyError
from processors.site import Partner
from schemas.errors import InvalidField, RejectReason
from schemas.event import Event
from tests.factories import participant_id

PERSON = participant_id("P1")  # the participant of these tests
T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DEFENDER = Partner("pda", "defender", "Defender", "legal_defense")
CASE_MANAGER = Partner("cm", "case_management", "Case management", "care_coordination")
HOUSING = Partner("house", "housing", "Housing", "care_coordination")

BASE = Consent(
    consent_id="C1",
    participant_id=PERSON,
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
    return Event("e-1", "ConsentGranted", PERSON, T0, payload, "cm")


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


# -- 42 CFR Part 2: the elements, the disclosing program, the expiry by event ---------------------

SUD = Partner("sud", "sud_treatment", "SUD program", "treatment")
MARKED = Partner("clinic", "medical", "Clinic with a Part 2 unit", "treatment", part2_program=True)
PART2 = replace(BASE, disclosing_programs=frozenset({"role:sud_treatment"}))

OPENS = [
    ("complete, program by role", PART2, SUD, True),
    ("complete, program by id", replace(PART2, disclosing_programs=frozenset({"sud"})), SUD, True),
    ("not a Part 2 consent", replace(PART2, part2=False), SUD, False),
    ("no disclosing program (a v1 consent)", BASE, SUD, False),
    ("names another program", replace(PART2, disclosing_programs=frozenset({"clinic"})), SUD,
     False),
    ("role names only that role", PART2, MARKED, False),
    ("marked program named by id", replace(PART2, disclosing_programs=frozenset({"clinic"})),
     MARKED, True),
    ("no expiry", replace(PART2, expires_at=None), SUD, False),
    ("expiry by program exit", replace(PART2, expires_at=None, expires_on_event="PROGRAM_EXIT"),
     SUD, True),
    ("no source", PART2, None, False),
]


@pytest.mark.parametrize(("consent", "source", "expected"), [case[1:] for case in OPENS],
                         ids=[case[0] for case in OPENS])
def test_opens_part2(consent: Consent, source: Partner | None, expected: bool) -> None:
    assert consent.opens_part2(source) is expected


def test_a_program_exit_ends_a_consent_that_expires_on_it_from_then_on() -> None:
    on_exit = replace(PART2, expires_at=None, expires_on_event="PROGRAM_EXIT", granted_at=T0)
    ended = on_exit.ended_by("ParticipantExited", T0 + 5 * DAY)
    assert ended.ended_at == T0 + 5 * DAY
    assert ended.is_active(T0 + 5 * DAY - timedelta(microseconds=1))
    assert not ended.is_active(T0 + 5 * DAY)
    assert ended.ended_by("ParticipantExited", T0 + 9 * DAY) == ended  # the first exit stands
    assert ended.ended_by("ParticipantExited", T0 + 2 * DAY).ended_at == T0 + 2 * DAY
    assert on_exit.ended_by("ParticipantExited", T0 - DAY) == on_exit  # an exit before signing
    assert on_exit.ended_by("ServiceExited", T0 + DAY) == on_exit  # not a program exit
    assert PART2.ended_by("ParticipantExited", T0 + DAY) == PART2  # does not expire on exit


def test_json_round_trip_with_the_part2_elements_and_without_them() -> None:
    consent = replace(PART2, expires_on_event="PROGRAM_EXIT", granted_at=T0,
                      ended_at=T0 + 3 * DAY)
    assert Consent.from_json(consent.to_json()) == consent
    stored_before = {k: v for k, v in BASE.to_json().items()
                     if k not in ("disclosing_programs", "expires_on_event", "granted_at",
                                  "ended_at")}
    assert Consent.from_json(stored_before) == BASE


def test_consent_from_event_reads_the_v2_elements_and_defaults_them_for_v1() -> None:
    v1 = {"consent_id": "C9", "recipients": ["cm"], "categories": ["SUD_TREATMENT"],
          "purposes": ["care_coordination"], "valid_from": T0, "expires_at": T0 + DAY,
          "exceptions": [], "part2": True, "form_sha256": "cd" * 32}
    old = consent_from_event(_grant(v1))
    assert old.disclosing_programs == frozenset() and old.expires_on_event is None
    assert old.granted_at == T0 and not old.opens_part2(SUD)
    new = consent_from_event(_grant({**v1, "disclosing_programs": ["sud"],
                                     "expires_on_event": "PROGRAM_EXIT"}))
    assert new.disclosing_programs == frozenset({"sud"})
    assert new.expires_on_event == "PROGRAM_EXIT"
    assert new.opens_part2(SUD)


COMPLETE: dict[str, Any] = {
    "consent_id": "C1", "recipients": ["cm"], "categories": ["SUD_TREATMENT"],
    "purposes": ["care_coordination"], "valid_from": T0, "expires_at": T0 + DAY,
    "exceptions": [], "part2": True, "disclosing_programs": ["role:sud_treatment"],
    "expires_on_event": None, "form_sha256": "cd" * 32,
}

MISSING = [
    ("no recipients", {"recipients": []}, "payload.recipients"),
    ("no disclosing program", {"disclosing_programs": []}, "payload.disclosing_programs"),
    ("a v1 payload", {"disclosing_programs": None}, "payload.disclosing_programs"),
    ("an unknown role", {"disclosing_programs": ["sud", "role:clinic"]},
     "payload.disclosing_programs[1]"),
    ("the hub is no program", {"disclosing_programs": ["role:hub"]},
     "payload.disclosing_programs[0]"),
    ("not a partner id", {"disclosing_programs": ["Riverbend Recovery"]},
     "payload.disclosing_programs[0]"),
    ("no expiry", {"expires_at": None, "expires_on_event": None}, "payload.expires_at"),
]


@pytest.mark.parametrize(("changes", "path"), [case[1:] for case in MISSING],
                         ids=[case[0] for case in MISSING])
def test_a_part2_consent_lacking_an_element_is_invalid_at_its_field(
    changes: dict[str, Any], path: str
) -> None:
    payload = {**COMPLETE, **changes}
    if changes.get("disclosing_programs", ()) is None:
        del payload["disclosing_programs"], payload["expires_on_event"]
    with pytest.raises(InvalidField) as caught:
        check_part2_elements(payload)
    assert caught.value.field_path == path
    assert caught.value.reason is RejectReason.INVALID_FIELD
    assert str(caught.value).startswith(path + ":")
    assert "Riverbend Recovery" not in str(caught.value)  # never a value


def test_complete_part2_consents_and_other_consents_pass() -> None:
    check_part2_elements(COMPLETE)
    check_part2_elements({**COMPLETE, "expires_at": None, "expires_on_event": "PROGRAM_EXIT"})
    check_part2_elements({**COMPLETE, "part2": False, "disclosing_programs": [],
                          "expires_at": None, "recipients": []})


#: Well-formed names only (malformed ones are refused, see the table above).
PROGRAM_NAMES = st.sampled_from(["sud", "clinic", "cm", "role:sud_treatment", "role:medical"])


@settings(max_examples=300, deadline=None)
@given(
    part2=st.booleans(),
    recipients=st.lists(st.sampled_from(["cm", "role:case_management", "pda"]), max_size=2),
    programs=st.one_of(st.none(), st.lists(PROGRAM_NAMES, max_size=3)),
    expires_at=st.one_of(st.none(), st.just(T0 + 30 * DAY)),
    on_event=st.one_of(st.none(), st.just("PROGRAM_EXIT")),
    source=st.sampled_from([SUD, MARKED, CASE_MANAGER]),
)
def test_nothing_the_door_refuses_could_open_a_part2_record(
    part2: bool, recipients: list[str], programs: list[str] | None, expires_at: datetime | None,
    on_event: str | None, source: Partner,
) -> None:
    """Whatever a ConsentGranted payload says (v1 payloads have no Part 2 keys at all): if the
    consent it grants would disclose a Part 2 record to anyone, the validator's rule accepts
    it; and a consent the rule accepts as Part 2 opens the records of each program it names."""
    payload: dict[str, Any] = {**COMPLETE, "part2": part2, "recipients": recipients,
                               "expires_at": expires_at, "expires_on_event": on_event}
    if programs is None:
        del payload["disclosing_programs"], payload["expires_on_event"]
    else:
        payload["disclosing_programs"] = programs
    consent = consent_from_event(_grant(payload))
    opens = consent.opens_part2(source) and consent.covers(
        CASE_MANAGER, "SUD_TREATMENT", "care_coordination", T0)
    try:
        check_part2_elements(payload)
        accepted = True
    except InvalidField:
        accepted = False
    if opens:
        assert accepted
    if accepted and part2 and (source.id in (programs or ())):
        assert consent.opens_part2(source)


def test_state_names_the_first_end_reached_revocation_first() -> None:
    assert BASE.state(T0 - DAY) is ConsentState.NOT_YET_IN_EFFECT
    assert BASE.state(T0) is ConsentState.ACTIVE
    assert BASE.state(T0 + 30 * DAY) is ConsentState.EXPIRED
    revoked = BASE.revoked(T0 + 10 * DAY)
    assert revoked.state(T0 + 10 * DAY - timedelta(microseconds=1)) is ConsentState.ACTIVE
    assert revoked.state(T0 + 10 * DAY) is ConsentState.REVOKED
    assert revoked.state(T0 + 40 * DAY) is ConsentState.REVOKED  # not "expired"
    on_exit = replace(BASE, expires_on_event="PROGRAM_EXIT", granted_at=T0)
    ended = on_exit.ended_by("ParticipantExited", T0 + 5 * DAY)
    assert ended.state(T0 + 5 * DAY) is ConsentState.ENDED_BY_EVENT
    assert ended.revoked(T0 + 3 * DAY).state(T0 + 6 * DAY) is ConsentState.REVOKED


@given(st.integers(min_value=-40, max_value=60), st.integers(min_value=0, max_value=50),
       st.integers(min_value=0, max_value=50))
def test_is_active_is_exactly_the_active_state(day: int, revoked_on: int, exit_on: int) -> None:
    consent = replace(BASE, expires_on_event="PROGRAM_EXIT", granted_at=T0)
    consent = consent.revoked(T0 + revoked_on * DAY).ended_by("ParticipantExited",
                                                               T0 + exit_on * DAY)
    now = T0 + day * DAY
    assert consent.is_active(now) == (consent.state(now) is ConsentState.ACTIVE)
    assert consent.is_active(now) == (
        T0 <= now < min(T0 + 30 * DAY, T0 + revoked_on * DAY, T0 + exit_on * DAY))
