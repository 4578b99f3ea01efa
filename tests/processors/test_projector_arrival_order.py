"""The property the live pipeline rests on: whatever order a participant's events arrive in,
each at a receive time at or after its occurred_at, the view after a final tick at T is exactly
the offline projection of the same events in (occurred_at, event_id) order at T."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.offline import project_events
from processors.projector import ParticipantState, Projector, ViewChange
from processors.site import SitePolicy
from processors.view import apply_changes
from schemas.catalog import CATEGORIES
from schemas.event import Event
from tests.processors.projector_strategies import (
    ALL_RECIPIENTS,
    CATALOG,
    CONSENT_IDS,
    DATA_TYPES,
    PARTNER_IDS,
    PERSON,
    PURPOSES,
    T0,
    hours_after,
    part2_elements,
    payload_for,
    sites,
)

# -- the view is a function of the set of events and the final instant -------------------------

#: Mostly the case manager p0 (may emit everything a participant history needs), sometimes a
#: partner whose role may not emit the type, or one the site does not know.
SOURCES = (*["p0"] * 8, *PARTNER_IDS[1:], "stranger")


def _source(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(SOURCES))


@st.composite
def participant_events(draw: st.DrawFn, deadline_days: int, size: int = 12) -> list[Event]:
    """A small set of one participant's events, occurred_at anywhere in a couple of months.

    Referrals (arrest diversion with or without charges held, other doors), intakes on time,
    late, before the referral or linked elsewhere, consents with expiry, exceptions and reused
    consent_ids, revocations (also of consents never granted), data events of several
    categories, sources that may not emit, and different events reusing an event_id.
    """
    events: list[Event] = []
    referrals: list[Event] = []
    for index in range(draw(st.integers(1, size))):
        event_id = str(uuid.UUID(int=50_000 + index, version=4))
        at = T0 + timedelta(hours=draw(st.integers(0, 24 * 60)))
        kind = draw(st.sampled_from(
            ("referral", "referral", "intake", "intake", "intake", "grant", "grant", "revoke",
             "data", "data", "reuse")))
        if kind == "referral":
            payload = payload_for("ReferralMade", draw)
            payload["door"] = draw(st.sampled_from(
                ("ARREST_DIVERSION", "ARREST_DIVERSION", "SOCIAL_CONTACT")))
            payload["charges_held"] = draw(st.integers(0, 3)) > 0
            event = Event(event_id, "ReferralMade", PERSON, at, payload, _source(draw))
            referrals.append(event)
        elif kind == "intake":
            payload = payload_for("IntakeCompleted", draw)
            if referrals and draw(st.integers(0, 3)):
                ref = draw(st.sampled_from(referrals))
                hours = draw(st.sampled_from((
                    st.integers(0, 24 * deadline_days),  # on time
                    st.just(24 * deadline_days),  # exactly at the due instant
                    st.integers(24 * deadline_days + 1, 24 * (deadline_days + 10)),  # late
                    st.integers(-48, -1),  # before the referral
                )))
                at = ref.occurred_at + timedelta(hours=draw(hours))
                payload["referral_event_id"] = draw(
                    st.sampled_from((ref.event_id, ref.event_id, None, "some-other-referral")))
            event = Event(event_id, "IntakeCompleted", PERSON, at, payload, _source(draw))
        elif kind == "grant":
            broad = draw(st.booleans())
            subset = st.lists(st.sampled_from(CATEGORIES), max_size=5, unique=True)
            who = st.lists(st.sampled_from(ALL_RECIPIENTS), max_size=4, unique=True)
            payload = {
                "consent_id": draw(st.sampled_from(CONSENT_IDS)),
                "recipients": list(ALL_RECIPIENTS) if broad else draw(who),
                "categories": list(CATEGORIES) if broad else draw(subset),
                "purposes": list(PURPOSES),
                "valid_from": at + timedelta(hours=draw(st.integers(-48, 96))),
                "expires_at": draw(st.one_of(st.none(), hours_after(at, 1, 24 * 40))),
                "exceptions": draw(st.lists(
                    st.fixed_dictionaries({"recipients": who, "categories": subset}),
                    max_size=1)),
                "part2": draw(st.booleans()),
                "form_sha256": "ab" * 32,
                **part2_elements(draw, broad),
            }
            event = Event(event_id, "ConsentGranted", PERSON, at, payload, _source(draw))
        elif kind == "revoke":
            payload = {"consent_id": draw(st.sampled_from((*CONSENT_IDS, "C9")))}
            event = Event(event_id, "ConsentRevoked", PERSON, at, payload, _source(draw))
        else:
            type_name = draw(st.sampled_from(DATA_TYPES))
            if kind == "reuse" and events:  # a different event under an id already used
                reused = draw(st.sampled_from(events))
                event_id = reused.event_id
                at = reused.occurred_at + timedelta(hours=draw(st.integers(-24, 24)))
            event = Event(event_id, type_name, PERSON, at, payload_for(type_name, draw),
                          _source(draw))
        events.append(event)
    return events


@dataclass(frozen=True)
class Arrival:
    event: Event | None  # None: a clock tick
    now: datetime


@st.composite
def arrivals(draw: st.DrawFn, events: list[Event]) -> tuple[list[Arrival], datetime]:
    """A random arrival order (with redeliveries and clock ticks) and non-decreasing nows, each
    at or after its event's occurred_at; plus a final instant T at or after every now."""
    redelivered = draw(st.lists(st.sampled_from(events), max_size=3))
    order = draw(st.permutations([*events, *redelivered]))
    gap = st.one_of(st.just(0), st.integers(0, 24 * 40))
    steps: list[Arrival] = []
    now = T0 - timedelta(days=1)
    for event in order:
        if draw(st.integers(0, 4)) == 0:
            now += timedelta(hours=draw(gap))
            steps.append(Arrival(None, now))
        now = max(now, event.occurred_at) + timedelta(hours=draw(gap))
        steps.append(Arrival(event, now))
    return steps, now + timedelta(hours=draw(st.integers(0, 24 * 100)))


def live(site: SitePolicy, steps: list[Arrival],
         end: datetime) -> tuple[ParticipantState, list[ViewChange]]:
    projector = Projector(site, CATALOG)
    state: ParticipantState | None = None
    changes: list[ViewChange] = []
    for step in steps:
        if step.event is None:
            if state is not None:
                state, new = projector.tick(state, step.now)
                changes.extend(new)
            continue
        state, new = projector.project(state, step.event, step.now)
        changes.extend(new)
    assert state is not None
    state, new = projector.tick(state, end)
    return state, [*changes, *new]


ORDER_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@ORDER_SETTINGS
@given(site=sites(), data=st.data())
def test_the_view_is_a_function_of_the_set_of_events_and_the_final_instant(
    site: SitePolicy, data: st.DataObject
) -> None:
    events = data.draw(participant_events(site.intake_deadline_days), label="events")
    steps, end = data.draw(arrivals(events), label="arrivals")
    state, changes = live(site, steps, end)
    in_order = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    offline = project_events(in_order, Projector(site, CATALOG), at=end)
    assert state.view_rows() == offline
    assert apply_changes({}, changes) == offline
    # and the state the live path keeps agrees with the replay's, so later steps agree too
    replayed = projector_state(site, in_order, end)
    assert dict(state.consents) == dict(replayed.consents)
    assert dict(state.deadlines) == dict(replayed.deadlines)
    assert set(state.events) == set(replayed.events)


def projector_state(site: SitePolicy, events: list[Event], end: datetime) -> ParticipantState:
    projector = Projector(site, CATALOG)
    state: ParticipantState | None = None
    for event in events:
        state, _ = projector.project(state, event, event.occurred_at)
    assert state is not None
    state, _ = projector.tick(state, end)
    return state
