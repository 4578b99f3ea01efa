"""A state that holds only its head projects exactly as the whole state does.

The live projector reads a participant back from SQL as its head plus the events whose ids the
batch projects (:mod:`processors.state`); the projector raises ``HistoryNeeded`` when a step
needs the rest, and the reader completes the state and projects again. For every step of random
histories (and of random arrival orders, reused event_ids and ticks included) this checks that
the step on the head-only state gives the changes of the step on the whole state, and that the
head-only result completed with the whole state before it is the whole state after it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from immutables import Map

from processors.errors import HistoryNeeded
from processors.projector import ParticipantState, Projector, ViewChange
from processors.site import SitePolicy
from processors.state import with_history
from schemas.event import Event
from tests.processors.projector_story import (
    CATALOG,
    DAY,
    HOUSE,
    SITE,
    T0,
    encounter,
    grant,
    intake,
    referral,
    revoke,
)
from tests.processors.projector_strategies import PROPERTY_SETTINGS, Step, histories, sites
from tests.processors.test_projector_arrival_order import (
    ORDER_SETTINGS,
    arrivals,
    participant_events,
)


def head_only(state: ParticipantState, event: Event | None) -> ParticipantState:
    """``state`` as the live projector reads it back: its head, and of its events only the one
    about to be projected (if held), no rows."""
    held = {} if event is None or event.event_id not in state.events else {
        event.event_id: state.events[event.event_id]}
    return replace(state, events=Map(held), rows=Map(), complete=False)


def step_both_ways(projector: Projector, state: ParticipantState | None, event: Event | None,
                   now: datetime) -> tuple[ParticipantState, list[ViewChange], bool]:
    """One step on the whole state and on its head-only form; assert they agree. Returns the
    whole result and whether the head-only step needed no history."""
    if event is None:
        assert state is not None
        whole, changes = projector.tick(state, now)
    else:
        whole, changes = projector.project(state, event, now)
    if state is None:  # a new participant: nothing to read back
        return whole, changes, False
    partial = head_only(state, event)
    try:
        if event is None:
            after, partial_changes = projector.tick(partial, now)
        else:
            after, partial_changes = projector.project(partial, event, now)
    except HistoryNeeded as need:
        assert need.participant_id == state.participant_id
        return whole, changes, False
    assert partial_changes == changes
    assert not after.complete
    assert with_history(after, state) == whole
    return whole, changes, True


def run_both_ways(site: SitePolicy,
                  steps: list[tuple[Event | None, datetime]]) -> tuple[Projector, ParticipantState]:
    """Every step (an event, or None for a tick, and its instant) both ways."""
    projector = Projector(site, CATALOG)
    state: ParticipantState | None = None
    for event, now in steps:
        if event is not None or state is not None:
            state, _, _ = step_both_ways(projector, state, event, now)
    assert state is not None
    return projector, state


@PROPERTY_SETTINGS
@given(site=sites(), steps=histories())
def test_a_head_only_state_projects_as_the_whole_state(
    site: SitePolicy, steps: list[Step]
) -> None:
    if any(step.event is not None for step in steps):
        run_both_ways(site, [(step.event, step.now) for step in steps])


@ORDER_SETTINGS
@given(site=sites(), data=st.data())
def test_a_head_only_state_projects_as_the_whole_state_in_any_arrival_order(
    site: SitePolicy, data: st.DataObject
) -> None:
    events = data.draw(participant_events(site.intake_deadline_days), label="events")
    steps, end = data.draw(arrivals(events), label="arrivals")
    run_both_ways(site, [(step.event, step.now) for step in steps] + [(None, end)])


def test_ordinary_events_and_redeliveries_need_no_history() -> None:
    """Service records, then one of them again: each step runs on the head alone."""
    projector = Projector(SITE, CATALOG)
    encounters = [encounter(T0 + n * DAY, "HOUSING", HOUSE) for n in range(5)]
    state: ParticipantState | None = None
    for index, event in enumerate(encounters):
        state, changes, head_only_ran = step_both_ways(projector, state, event,
                                                       event.occurred_at)
        assert changes and head_only_ran == (index > 0)
    assert state is not None
    again, changes, head_only_ran = step_both_ways(projector, state, encounters[0],
                                                   T0 + 6 * DAY)
    assert head_only_ran and changes == [] and again.events == state.events


def test_a_consent_change_on_a_head_only_state_asks_for_the_history() -> None:
    projector = Projector(SITE, CATALOG)
    state, _ = projector.project(None, encounter(T0, "HOUSING", HOUSE), T0)
    state, _ = projector.project(state, grant(T0 + DAY), T0 + DAY)
    for event in (revoke(T0 + 2 * DAY), grant(T0 + 2 * DAY, consent_id="C2")):
        with pytest.raises(HistoryNeeded):
            projector.project(head_only(state, event), event, event.occurred_at)
    with pytest.raises(HistoryNeeded):
        head_only(state, None).to_json()
    assert projector.reads_history(revoke(T0))
    assert not projector.reads_history(encounter(T0, "HOUSING", HOUSE))


def test_a_referral_reported_after_its_intake_asks_for_the_history() -> None:
    """Whether an intake already met the deadline is in the history, not in the head."""
    projector = Projector(SITE, CATALOG)
    state, _ = projector.project(None, encounter(T0, "HOUSING", HOUSE), T0)
    late_referral = referral(T0 + DAY)
    state, _, _ = step_both_ways(projector, state, intake(T0 + 2 * DAY,
                                                          late_referral.event_id), T0 + 2 * DAY)
    whole, _, head_only_ran = step_both_ways(projector, state, late_referral, T0 + 3 * DAY)
    assert not head_only_ran and not whole.deadlines
