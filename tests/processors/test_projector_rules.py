"""The projector, rule by rule, on the example site and the real catalog."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from processors.errors import PolicyError, StateError
from processors.policy import REDISCLOSURE_NOTICE
from processors.projector import ParticipantState
from processors.view import apply_changes
from schemas.event import Event
from tests.factories import participant_id
from tests.processors.projector_story import (
    CM,
    COORD,
    DAY,
    HOUSE,
    MH,
    PAO,
    PD,
    PDA,
    PERSON,
    SITE,
    SUD,
    T0,
    Run,
    encounter,
    event,
    exit_,
    grant,
    intake,
    recipients,
    referral,
    revoke,
)


def test_source_always_sees_its_own_event() -> None:
    run = Run()
    changes = run.project(encounter(T0, "SUD_TREATMENT", SUD))
    assert recipients(changes) == {SUD}
    row = run.rows(SUD)[changes[0].event_id]
    assert set(row.fields) == {"service_type", "provider", "duration_minutes", "notes"}


def test_anything_a_part2_program_records_is_a_part2_record() -> None:
    """An SUD program's IdentifierLinked would tell police the person is its patient."""
    run = Run()
    linked = run.project(event("IdentifierLinked", SUD, T0, partner=SUD, local_id="RB-1"))
    assert recipients(linked) == {SUD}  # the case manager sees IDENTITY, but not from SUD
    run.project(grant(T0 + DAY, categories=["SUD_TREATMENT"]))
    row = run.rows(CM)[linked[0].event_id]
    assert row.categories == ("SUD_TREATMENT",) and row.notice == REDISCLOSURE_NOTICE
    assert linked[0].event_id not in run.rows(PD) and linked[0].event_id not in run.rows(PAO)
    other = run.project(event("IdentifierLinked", HOUSE, T0, partner=HOUSE, local_id="CH-1"))
    assert CM in recipients(other)  # the same type from a non-Part 2 source is IDENTITY


def test_value_dependent_category_hides_the_fact_an_sud_encounter_happened() -> None:
    run = Run()
    sud = run.project(encounter(T0, "SUD_TREATMENT", SUD))
    housing = run.project(encounter(T0 + DAY, "HOUSING", HOUSE))
    assert PD not in recipients(sud) and PAO not in recipients(sud)
    assert recipients(housing) >= {PD, PAO, HOUSE, CM, COORD}
    assert all(row.notice is None for change in housing if (row := change.row))


def test_always_rows_carry_only_visible_fields() -> None:
    run = Run()
    ev = referral(T0)
    run.project(ev)
    prosecutor_row = run.rows(PAO)[ev.event_id]
    assert "charges_held" in prosecutor_row.fields  # LEGAL_CASE: always for the prosecutor
    defender_row = run.rows(PDA)[ev.event_id]
    assert set(defender_row.categories) == {"LEGAL_CASE", "REFERRAL"}
    assert ev.event_id not in run.rows(HOUSE)  # housing: REFERRAL never


def test_consent_grant_adds_rows_and_revocation_retracts_them() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    granted = run.project(grant(T0 + DAY))
    sud_rows = [c for c in granted if c.event_id == sud.event_id]
    assert {c.recipient for c in sud_rows} == {PDA, CM}
    for change in sud_rows:
        assert change.row is not None
        assert change.row.consent_ids == ("C1",)
        assert change.row.notice == REDISCLOSURE_NOTICE
    revoked = run.project(revoke(T0 + 2 * DAY))
    assert {(c.kind, c.recipient, c.event_id) for c in revoked} == {
        ("retract", PDA, sud.event_id),
        ("retract", CM, sud.event_id),
        ("upsert", CM, revoked[-1].event_id),  # the revocation event itself (CONSENT: always)
        ("upsert", COORD, revoked[-1].event_id),
    }
    assert sud.event_id not in run.rows(PDA)


def test_expiry_retracts_on_tick_and_on_an_unrelated_event() -> None:
    for via_tick in (True, False):
        run = Run()
        sud = encounter(T0, "SUD_TREATMENT", SUD)
        run.project(sud)
        run.project(grant(T0, expires_at=T0 + 10 * DAY))
        assert sud.event_id in run.rows(PDA)
        assert run.tick(T0 + 10 * DAY - timedelta(microseconds=1)) == []
        if via_tick:
            changes = run.tick(T0 + 10 * DAY)
        else:
            changes = run.project(encounter(T0 + 11 * DAY, "HOUSING", HOUSE))
        assert ("retract", PDA, sud.event_id) in {(c.kind, c.recipient, c.event_id)
                                                  for c in changes}
        assert sud.event_id not in run.rows(PDA)


def test_consent_valid_from_in_the_future_opens_rows_only_then() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    run.project(grant(T0, valid_from=T0 + 5 * DAY))
    assert sud.event_id not in run.rows(PDA)
    run.tick(T0 + 5 * DAY)
    assert sud.event_id in run.rows(PDA)


def test_revocation_arriving_before_its_grant_is_not_lost() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    run.project(revoke(T0 + DAY))
    changes = run.project(grant(T0, consent_id="C1"), now=T0 + 2 * DAY)
    assert sud.event_id not in run.rows(PDA)
    assert all(c.event_id != sud.event_id for c in changes)


def test_revoke_then_regrant_restores_what_the_new_consent_covers() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    home = event("HousingStatusChanged", HOUSE, T0, status="HOUSED", provider="Cedar")
    run.project(sud)
    run.project(home)
    run.project(grant(T0 + DAY))
    run.project(revoke(T0 + 2 * DAY))
    changes = run.project(grant(T0 + 3 * DAY, consent_id="C2", categories=["HOUSING"],
                                part2=False))
    assert sud.event_id not in run.rows(PDA)
    assert run.rows(PDA)[home.event_id].consent_ids == ("C2",)
    assert ("upsert", PDA, home.event_id) in {(c.kind, c.recipient, c.event_id) for c in changes}


def test_a_second_grant_with_the_same_consent_id_changes_no_consent() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    run.project(grant(T0, categories=["HOUSING"]))
    run.project(grant(T0 + DAY, categories=["SUD_TREATMENT"]))
    assert sud.event_id not in run.rows(PDA)


def test_the_earliest_grant_of_a_consent_id_wins_whichever_arrives_first() -> None:
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    narrow = grant(T0, categories=["HOUSING"])
    broad = grant(T0 + DAY, categories=["SUD_TREATMENT"])
    for order in ((narrow, broad), (broad, narrow)):
        run = Run()
        run.project(sud)
        for ev in order:
            run.project(ev, now=T0 + 2 * DAY)
        assert sud.event_id not in run.rows(PDA)
        assert run.state is not None
        assert run.state.consents["C1"].granted_event_id == narrow.event_id
        assert apply_changes({}, run.changes) == run.state.view_rows()


def test_a_late_earlier_grant_keeps_the_revocation_of_its_consent_id() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    run.project(grant(T0 + 2 * DAY))
    run.project(revoke(T0 + 3 * DAY))
    run.project(grant(T0 + DAY, categories=["HOUSING"]), now=T0 + 4 * DAY)
    assert run.state is not None
    assert run.state.consents["C1"].revoked_at == T0 + 3 * DAY
    assert sud.event_id not in run.rows(PDA)


# -- 42 CFR Part 2: only a complete Part 2 consent naming the disclosing program ------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"part2": False},
        {"disclosing_programs": []},  # what a ConsentGranted v1 decodes to
        {"disclosing_programs": [MH, "role:mental_health"]},
        {"disclosing_programs": [CM]},
        {"expires_at": None},
    ],
    ids=["not a Part 2 consent", "no disclosing program (v1)", "names another program",
         "names only the recorder of the consent", "no expiry"],
)
def test_a_part2_record_is_not_disclosed_under_an_incomplete_consent(
    changes: dict[str, Any]
) -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    linked = event("IdentifierLinked", SUD, T0, partner=SUD, local_id="RB-1")
    run.project(sud)
    run.project(linked)
    housing = event("HousingStatusChanged", HOUSE, T0, status="HOUSED", provider="Cedar")
    run.project(housing)
    run.project(grant(T0 + DAY, **changes))
    for recipient in (PDA, CM):
        assert sud.event_id not in run.rows(recipient)
        assert linked.event_id not in run.rows(recipient)
    assert run.rows(PDA)[housing.event_id].consent_ids == ("C1",)  # HOUSING: any consent
    assert sud.event_id in run.rows(SUD)  # the program still sees its own records


@pytest.mark.parametrize("discloser", [SUD, "role:sud_treatment"])
def test_a_complete_part2_consent_discloses_with_the_notice(discloser: str) -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    changes = run.project(grant(T0 + DAY, disclosing_programs=[discloser]))
    assert {c.recipient for c in changes if c.event_id == sud.event_id} == {PDA, CM}
    for recipient in (PDA, CM):
        row = run.rows(recipient)[sud.event_id]
        assert row.consent_ids == ("C1",) and row.notice == REDISCLOSURE_NOTICE
    assert sud.event_id not in run.rows(PD) and sud.event_id not in run.rows(PAO)
    assert sud.event_id not in run.rows(HOUSE)  # housing: SUD_TREATMENT never, consent or not


def test_sud_data_a_case_manager_records_needs_the_case_manager_named_as_discloser() -> None:
    run = Run()
    referral_ = event("ServiceReferralMade", CM, T0, service_type="SUD_TREATMENT",
                      provider=SUD, notes=None)
    run.project(referral_)
    run.project(grant(T0 + DAY, disclosing_programs=[SUD]))
    assert referral_.event_id not in run.rows(PDA)
    run.project(grant(T0 + 2 * DAY, consent_id="C2", disclosing_programs=[CM]))
    assert run.rows(PDA)[referral_.event_id].consent_ids == ("C2",)


def test_a_consent_expiring_on_program_exit_ends_at_the_exit_in_either_arrival_order() -> None:
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    on_exit = grant(T0 + DAY, expires_at=None, expires_on_event="PROGRAM_EXIT")
    left = exit_(T0 + 10 * DAY)
    run = Run()
    run.project(sud)
    run.project(on_exit)
    run.tick(T0 + 10 * DAY - timedelta(microseconds=1))
    assert sud.event_id in run.rows(PDA)
    changes = run.project(left)
    assert ("retract", PDA, sud.event_id) in {(c.kind, c.recipient, c.event_id) for c in changes}
    assert run.state is not None
    in_time = run.state.view_rows()
    for order in itertools.permutations((sud, on_exit, left)):
        late = Run()
        for ev in order:
            late.project(ev, now=T0 + 10 * DAY)
        assert late.state is not None and late.state.consents["C1"].ended_at == T0 + 10 * DAY
        assert late.state.view_rows() == in_time, order
        assert apply_changes({}, late.changes) == in_time


def test_an_exit_arriving_after_its_time_retracts_at_once_and_an_older_exit_ends_nothing() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(exit_(T0 - 30 * DAY))  # an earlier stay in the program
    run.project(sud)
    run.project(grant(T0 + DAY, expires_at=None, expires_on_event="PROGRAM_EXIT"))
    assert sud.event_id in run.rows(CM)
    changes = run.project(exit_(T0 + 3 * DAY), now=T0 + 5 * DAY)
    assert ("retract", CM, sud.event_id) in {(c.kind, c.recipient, c.event_id) for c in changes}


def test_a_dated_part2_consent_is_not_ended_by_an_exit() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    run.project(grant(T0 + DAY))
    run.project(exit_(T0 + 2 * DAY))
    assert sud.event_id in run.rows(PDA)
    run.tick(T0 + DAY + 90 * DAY)
    assert sud.event_id not in run.rows(PDA)


def test_floor_holds_against_a_consent_naming_the_police() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    run.project(grant(T0, recipients=["role:police", "role:prosecutor", PD, PAO],
                      categories=["SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"],
                      purposes=["diversion_referral", "prosecution_decision"]))
    assert sud.event_id not in run.rows(PD)
    assert sud.event_id not in run.rows(PAO)


@pytest.mark.parametrize(
    "bad",
    [
        event("ConsentGranted", PD, T0, consent_id="C1", recipients=[PD],
              categories=["HOUSING"], purposes=["diversion_referral"], valid_from=T0,
              expires_at=None, exceptions=[], part2=False, form_sha256="ab" * 32),
        event("ContactLogged", "stranger", T0, contact_method="PHONE", successful=True,
              duration_minutes=None),
        event("IntakeDeadlineMissed", "hub", T0, referral_event_id="x", due_at=T0),
    ],
    ids=["police may not record a consent", "unknown partner", "outsider posing as hub"],
)
def test_rejected_events_change_nothing(bad: Event) -> None:
    run = Run()
    run.project(encounter(T0, "HOUSING", HOUSE))
    before = run.state
    assert before is not None
    after, changes = run.projector.project(before, bad, T0)
    assert changes == []
    assert after == before


def test_duplicate_event_id_changes_nothing() -> None:
    run = Run()
    ev = encounter(T0, "HOUSING", HOUSE)
    run.project(ev)
    before = run.state
    assert before is not None
    assert run.projector.project(before, ev, T0) == (before, [])
    later = Event(ev.event_id, "ContactLogged", PERSON, T0 + DAY, {"contact_method": "PHONE",
                  "successful": True, "duration_minutes": 5}, CM)
    assert run.projector.project(before, later, T0) == (before, [])


def test_a_reused_event_id_resolves_to_the_same_event_in_either_arrival_order() -> None:
    first = encounter(T0 + DAY, "HOUSING", HOUSE)
    other = Event(first.event_id, "ContactLogged", PERSON, T0, {"contact_method": "PHONE",
                  "successful": True, "duration_minutes": 5}, CM)  # earlier: it is the event
    end = T0 + 2 * DAY
    views = []
    for order in ((first, other), (other, first)):
        run = Run()
        for ev in order:
            run.project(ev, now=end)
        assert run.state is not None
        assert run.state.events[first.event_id] == other
        assert apply_changes({}, run.changes) == run.state.view_rows()
        views.append(run.state.view_rows())
    assert views[0] == views[1]
    assert views[0][PD][first.event_id].type == "ContactLogged"


def test_time_never_runs_backwards_for_a_participant() -> None:
    run = Run()
    sud = encounter(T0, "SUD_TREATMENT", SUD)
    run.project(sud)
    run.project(grant(T0, expires_at=T0 + 5 * DAY))
    run.tick(T0 + 6 * DAY)
    run.tick(T0 + DAY)  # an older clock: expiry stands
    assert sud.event_id not in run.rows(PDA)
    assert run.state is not None and run.state.as_of == T0 + 6 * DAY


def test_change_stream_rebuilds_the_view_and_state_round_trips_through_json() -> None:
    run = Run()
    ref = referral(T0)
    for ev in [ref, encounter(T0 + DAY, "SUD_TREATMENT", SUD), grant(T0 + 2 * DAY),
               event("HousingStatusChanged", HOUSE, T0 + 3 * DAY, status="HOUSED",
                     provider="Cedar"), revoke(T0 + 4 * DAY), intake(T0 + 20 * DAY)]:
        run.project(ev)
    assert run.state is not None
    assert apply_changes({}, run.changes) == run.state.view_rows()
    text = json.dumps(run.state.to_json())
    restored = ParticipantState.from_json(json.loads(text))
    assert restored == run.state
    assert json.dumps(restored.to_json()) == text


def test_next_due_reports_the_earliest_timer() -> None:
    run = Run()
    run.project(referral(T0))
    run.project(grant(T0, expires_at=T0 + 5 * DAY))
    assert run.state is not None
    assert run.projector.next_due(run.state) == T0 + 5 * DAY
    run.tick(T0 + 6 * DAY)
    assert run.projector.next_due(run.state) == T0 + SITE.intake_deadline_days * DAY


def test_state_for_another_participant_and_naive_now_are_errors() -> None:
    run = Run()
    run.project(referral(T0))
    other = Event(str(uuid.uuid4()), "ContactLogged", participant_id("P2"), T0, {}, CM)
    with pytest.raises(PolicyError):
        run.projector.project(run.state, other, T0)
    with pytest.raises(PolicyError, match="naive"):
        run.projector.project(None, referral(T0), datetime(2025, 1, 1))


def test_corrupt_state_is_a_state_error() -> None:
    with pytest.raises(StateError):
        ParticipantState.from_json({"format": 99, "participant_id": PERSON})
    with pytest.raises(StateError):
        ParticipantState.from_json({"format": 1, "participant_id": PERSON})
