"""The projector's intake deadlines, rule by rule: a missed deadline derives a hub event for the
prosecutor, an intake meets it (late or not), and only arrest diversions with charges held
start one."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from processors.deadlines import MISSED_NAMESPACE
from processors.offline import project_events
from processors.projector import Projector
from processors.view import apply_changes
from schemas.codec import encode
from schemas.errors import InvalidField
from schemas.event import Event, derived_event_id
from tests.processors.projector_story import (
    CATALOG,
    DAY,
    PAO,
    SITE,
    T0,
    Run,
    intake,
    referral,
)


def test_deadline_missed_derives_a_deterministic_hub_event_for_the_prosecutor() -> None:
    run = Run()
    ref = referral(T0)
    run.project(ref)
    due = T0 + SITE.intake_deadline_days * DAY
    assert run.tick(due) == []
    changes = run.tick(due + timedelta(seconds=1))
    missed_id = derived_event_id(MISSED_NAMESPACE, ref.event_id)
    assert {c.event_id for c in changes} == {missed_id}
    row = run.rows(PAO)[missed_id]
    assert row.source_partner == "hub"
    assert row.type == "IntakeDeadlineMissed"
    assert row.fields == {"referral_event_id": ref.event_id, "due_at": due}
    assert run.tick(due + 2 * DAY) == []  # fires once


def test_no_partner_event_can_carry_a_derived_event_id() -> None:
    ref = referral(T0)
    missed_id = derived_event_id(MISSED_NAMESPACE, ref.event_id)
    assert uuid.UUID(missed_id).version == 8
    assert derived_event_id(MISSED_NAMESPACE, ref.event_id) == missed_id  # deterministic
    forged = Event(event_id=missed_id, type="ContactLogged", participant_id=ref.participant_id,
                   occurred_at=T0, payload={"contact_method": "OUTREACH", "successful": True})
    with pytest.raises(InvalidField) as caught:
        encode(forged, CATALOG)
    assert caught.value.field_path == "event_id"
    assert "reserved" in str(caught.value)


def test_deadline_met_by_intake_linked_or_not() -> None:
    for linked in (True, False):
        run = Run()
        ref = referral(T0)
        run.project(ref)
        due = T0 + SITE.intake_deadline_days * DAY
        run.project(intake(due, ref.event_id if linked else None))  # exactly at due: met
        assert all(c.row is None or c.row.type != "IntakeDeadlineMissed"
                   for c in run.tick(due + 30 * DAY))


def test_deadline_met_late_shows_both_the_miss_and_the_late_intake() -> None:
    run = Run()
    ref = referral(T0)
    run.project(ref)
    late = intake(T0 + (SITE.intake_deadline_days + 3) * DAY, ref.event_id)
    changes = run.project(late)
    types = [c.row.type for c in changes if c.row is not None and c.recipient == PAO]
    assert types == ["IntakeCompleted", "IntakeDeadlineMissed"]


DUE_DAYS = SITE.intake_deadline_days


@pytest.mark.parametrize(
    ("steps", "intake_day", "link", "missed_at_end", "retracted"),
    [
        # steps: (what, day it reaches the hub); the referral occurred on day 0
        ((("ref", 0), ("tick", DUE_DAYS + 1), ("intake", DUE_DAYS + 5)), 3, "ref", False, True),
        ((("ref", 0), ("tick", DUE_DAYS + 1), ("intake", DUE_DAYS + 5)), 3, None, False, True),
        ((("ref", 0), ("tick", DUE_DAYS + 1), ("intake", DUE_DAYS + 5)), DUE_DAYS, "ref", False,
         True),
        ((("ref", DUE_DAYS + 2), ("intake", DUE_DAYS + 3)), 3, "ref", False, True),
        ((("intake", 4), ("ref", DUE_DAYS + 2)), 3, "ref", False, False),
        ((("ref", 0), ("tick", DUE_DAYS + 1), ("intake", DUE_DAYS + 5)), DUE_DAYS + 1, "ref",
         True, False),
        ((("ref", 0), ("tick", DUE_DAYS + 1), ("intake", DUE_DAYS + 5)), 3, "other", True,
         False),
        ((("ref", 0), ("tick", DUE_DAYS + 1), ("intake", DUE_DAYS + 5)), -1, None, True, False),
        ((("ref", 0), ("intake", 3), ("tick", DUE_DAYS + 5)), 3, "ref", False, False),
    ],
    ids=[
        "on-time linked intake entered after the miss",
        "on-time unlinked intake entered after the miss",
        "intake exactly at the due instant entered after the miss",
        "referral reported after its due date, then its on-time intake",
        "intake before the late-reported referral: never missed",
        "intake after the due instant does not undo the miss",
        "intake linked to another referral does not undo the miss",
        "unlinked intake before the referral does not undo the miss",
        "intake in time, in order: never missed",
    ],
)
def test_a_late_reported_on_time_intake_retracts_the_miss(
    steps: tuple[tuple[str, int], ...], intake_day: int, link: str | None, missed_at_end: bool,
    retracted: bool,
) -> None:
    ref = referral(T0)
    linked = {"ref": ref.event_id, "other": "some-other-referral", None: None}[link]
    taken = intake(T0 + intake_day * DAY, linked)
    missed_id = derived_event_id(MISSED_NAMESPACE, ref.event_id)
    end = T0 + (DUE_DAYS + 10) * DAY
    run = Run()
    for what, day in steps:
        now = T0 + day * DAY
        if what == "tick":
            run.tick(now)
        else:
            run.project(ref if what == "ref" else taken, now=now)
    run.tick(end)
    assert run.state is not None
    view = run.state.view_rows()
    shown_to = {r for r, rows in view.items() if missed_id in rows}
    assert bool(shown_to) == missed_at_end
    if missed_at_end:
        assert PAO in shown_to and view[PAO][missed_id].fields["due_at"] == ref.occurred_at + (
            DUE_DAYS * DAY)
    upserted = {c.recipient for c in run.changes if c.event_id == missed_id and c.kind == "upsert"}
    retracts = {c.recipient for c in run.changes if c.event_id == missed_id and c.kind == "retract"}
    assert bool(retracts) == retracted
    if retracted:
        assert PAO in retracts and retracts == upserted  # every recipient that had it
        assert missed_id not in run.state.events and not run.state.deadlines
    assert apply_changes({}, run.changes) == view
    offline = project_events(sorted((ref, taken), key=lambda e: (e.occurred_at, e.event_id)),
                             Projector(SITE, CATALOG), at=end)
    assert view == offline


def test_intake_linked_to_another_referral_does_not_meet_the_deadline() -> None:
    run = Run()
    run.project(referral(T0))
    run.project(intake(T0 + DAY, "some-other-referral"))
    changes = run.tick(T0 + 40 * DAY)
    assert any(c.row is not None and c.row.type == "IntakeDeadlineMissed" for c in changes)


@pytest.mark.parametrize(("door", "held"), [("SOCIAL_CONTACT", False), ("ARREST_DIVERSION", False),
                                            ("COMMUNITY", False)])
def test_no_deadline_without_arrest_diversion_and_charges_held(door: str, held: bool) -> None:
    run = Run()
    run.project(referral(T0, door=door, held=held))
    assert run.tick(T0 + 60 * DAY) == []


def test_referral_arriving_after_its_intake_starts_no_deadline() -> None:
    run = Run()
    ref = referral(T0)
    run.project(intake(T0 + DAY, ref.event_id))
    run.project(ref, now=T0 + 2 * DAY)
    assert run.state is not None and not run.state.deadlines
    assert run.tick(T0 + 60 * DAY) == []


