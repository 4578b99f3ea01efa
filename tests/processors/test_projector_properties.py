"""Properties of the projector over random sites, consents and event sequences.

A small reference implementation (:func:`expected_rows`), written straight from the policy
rules (docs/architecture.md "Where policy lives"), says what every recipient must see; the
projector must agree with it after every step — so nothing leaks and nothing is lost,
including after revocations and expiries.

The reference holds the 42 CFR Part 2 rule as the issue states it: a Part 2 record (category
SUD_TREATMENT, or anything a Part 2 program records) reaches another partner only under an
active Part 2 consent that names the recipient, names the record's source among its disclosing
programs and has an expiry; an ``always`` rule or an ordinary consent never opens it.

The property the live pipeline rests on (arrival order) is in test_projector_arrival_order.py.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.consent import Consent, consent_from_event
from processors.floor import floor_forbids
from processors.projector import ParticipantState, Projector, ViewChange
from processors.site import Access, Partner, SitePolicy
from processors.view import apply_changes
from schemas.catalog import CATEGORIES
from schemas.event import Event
from tests.processors.projector_strategies import (
    ALL_RECIPIENTS,
    CATALOG,
    EXPIRY_EVENTS,
    PERSON,
    PROPERTY_SETTINGS,
    PURPOSES,
    T0,
    Step,
    histories,
    hours_after,
    part2_elements,
    payload_for,
    sites,
)

# -- the reference ------------------------------------------------------------------------------


def accepted(site: SitePolicy, steps: list[Step]) -> list[Event]:
    """Events that may affect the view: first of each id, from a partner whose role may emit."""
    seen: set[str] = set()
    kept: list[Event] = []
    for step in steps:
        event = step.event
        if event is None or event.event_id in seen:
            continue
        partner = site.partner(event.source_partner)
        if partner is None or not CATALOG.may_emit(partner.role, event.type):
            continue
        seen.add(event.event_id)
        kept.append(event)
    return kept


def reference_consents(events: list[Event]) -> list[Consent]:
    """Earliest grant per consent id (histories arrive in occurred_at order, ids increasing);
    revoked at the first revocation (before or after the grant); a consent expiring on program
    exit ends at the first exit at or after its grant."""
    grants: dict[str, Consent] = {}
    revoked: dict[str, datetime] = {}
    exits = [event.occurred_at for event in events if event.type == "ParticipantExited"]
    for event in events:
        if event.type == "ConsentGranted":
            consent = consent_from_event(event)
            if consent.expires_on_event == "PROGRAM_EXIT":
                after = [at for at in exits if at >= event.occurred_at]
                consent = replace(consent, ended_at=min(after, default=None))
            grants.setdefault(consent.consent_id, consent)
        elif event.type == "ConsentRevoked":
            revoked.setdefault(event.payload["consent_id"], event.occurred_at)
    return [
        consent.revoked(revoked[cid]) if cid in revoked else consent
        for cid, consent in grants.items()
    ]


def complete_part2(consent: Consent, source: Partner | None) -> bool:
    """The Part 2 consent elements, written out: Part 2, names the source, has an expiry."""
    return (
        consent.part2
        and source is not None
        and bool({source.id, f"role:{source.role}"} & consent.disclosing_programs)
        and (consent.expires_at is not None or consent.expires_on_event is not None)
    )


def is_part2_program(partner: Partner | None) -> bool:
    return partner is not None and (partner.part2_program or partner.role == "sud_treatment")


def may_see(site: SitePolicy, partner: Partner, category: str, source: str | None,
            consents: list[Consent], now: datetime) -> bool:
    if floor_forbids(partner.role, category):
        return False
    if partner.id == source:
        return True
    rule = site.access_for(partner.role, category)
    if category == "SUD_TREATMENT":  # a Part 2 record: a complete Part 2 consent or nothing
        discloser = site.partner(source)
        return rule is not Access.NEVER and any(
            c.covers(partner, category, partner.purpose, now) and complete_part2(c, discloser)
            for c in consents
        )
    if rule is Access.ALWAYS:
        return True
    return rule is Access.WITH_CONSENT and any(
        c.covers(partner, category, partner.purpose, now) for c in consents
    )


def expected_fields(site: SitePolicy, partner: Partner, event: Event, consents: list[Consent],
                    now: datetime) -> tuple[str, ...] | None:
    event_type = CATALOG.latest(event.type)
    part2_program = is_part2_program(site.partner(event.source_partner))
    row_category = "SUD_TREATMENT" if part2_program else event_type.event_category(event.payload)
    if not may_see(site, partner, row_category, event.source_partner, consents, now):
        return None
    categories = event_type.field_categories(event.payload)
    if part2_program:  # everything a Part 2 program records is a Part 2 record
        categories = dict.fromkeys(categories, "SUD_TREATMENT")
    return tuple(name for name in event.payload
                 if name in categories
                 and may_see(site, partner, categories[name], event.source_partner, consents, now))


def check_against_reference(site: SitePolicy, steps: list[Step], state: ParticipantState,
                            now: datetime) -> None:
    events = accepted(site, steps)
    consents = reference_consents(events)
    view = state.view_rows()
    derived = [e for e in state.events.values() if e.source_partner == "hub"]
    for partner in site.partners:
        rows = view.get(partner.id, {})
        for event in [*events, *derived]:
            fields = expected_fields(site, partner, event, consents, now)
            row = rows.get(event.event_id)
            assert (row is None) == (fields is None), (partner, event.type)
            if row is not None:
                assert tuple(row.fields) == tuple(sorted(fields))  # rows list fields sorted
                for category in row.categories:
                    assert not floor_forbids(partner.role, category)
                for consent_id in row.consent_ids:
                    consent = next(c for c in consents if c.consent_id == consent_id)
                    assert consent.is_active(now)
                part2_row = "SUD_TREATMENT" in row.categories
                if part2_row:  # the § 2.32 notice on every Part 2 row
                    assert row.notice is not None
                if part2_row and partner.id != event.source_partner:
                    source = site.partner(event.source_partner)
                    assert any(complete_part2(c, source) for c in consents
                               if c.consent_id in row.consent_ids)
        assert set(rows) <= {e.event_id for e in [*events, *derived]}


def run(site: SitePolicy, steps: list[Step],
        check: bool = False) -> tuple[ParticipantState, list[ViewChange]]:
    projector = Projector(site, CATALOG)
    state: ParticipantState | None = None
    changes: list[ViewChange] = []
    for index, step in enumerate(steps):
        if step.event is None:
            if state is None:
                continue
            state, new = projector.tick(state, step.now)
        else:
            state, new = projector.project(state, step.event, step.now)
            if check:
                again = projector.project(state, step.event, step.now)
                assert again == (state, []), "a redelivered event changed something"
        changes.extend(new)
        if check:
            check_against_reference(site, steps[: index + 1], state, step.now)
            restored = ParticipantState.from_json(json.loads(json.dumps(state.to_json())))
            assert restored == state
    assert state is not None or all(step.event is None for step in steps)
    return state or ParticipantState(PERSON), changes


# -- properties ---------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(site=sites(), steps=histories())
def test_no_leak_no_loss_after_every_step_and_redelivery_changes_nothing(
    site: SitePolicy, steps: list[Step]
) -> None:
    state, changes = run(site, steps, check=True)
    assert apply_changes({}, changes) == state.view_rows()


@PROPERTY_SETTINGS
@given(site=sites(), steps=histories())
def test_same_inputs_same_outputs(site: SitePolicy, steps: list[Step]) -> None:
    first_state, first_changes = run(site, steps)
    second_state, second_changes = run(site, steps)
    assert first_changes == second_changes
    assert json.dumps(first_state.to_json()) == json.dumps(second_state.to_json())


@PROPERTY_SETTINGS
@given(site=sites(), steps=histories(), split=st.integers(0, 14))
def test_resuming_from_stored_json_state_gives_the_same_result(
    site: SitePolicy, steps: list[Step], split: int
) -> None:
    whole_state, whole_changes = run(site, steps)
    head_state, head_changes = run(site, steps[:split]) if split else (None, [])
    projector = Projector(site, CATALOG)
    state = (
        ParticipantState.from_json(json.loads(json.dumps(head_state.to_json())))
        if head_state is not None and head_state.as_of is not None else None
    )
    tail_changes: list[ViewChange] = []
    for step in steps[split:]:
        if step.event is None:
            if state is None:
                continue
            state, new = projector.tick(state, step.now)
        else:
            state, new = projector.project(state, step.event, step.now)
        tail_changes.extend(new)
    if state is not None:
        assert state == whole_state
    assert head_changes + tail_changes == whole_changes


@st.composite
def part2_sites(draw: st.DrawFn) -> SitePolicy:
    """Random sites where p1 is a Part 2 program and many roles may see SUD_TREATMENT with
    consent (or, wrongly, always)."""
    site = draw(sites())
    partners = tuple(
        replace(p, role="sud_treatment") if p.id == "p1" else p for p in site.partners)
    part2_rules = st.sampled_from((Access.WITH_CONSENT, Access.WITH_CONSENT, Access.ALWAYS,
                                   Access.NEVER))
    access = {role: {**rules, "SUD_TREATMENT": draw(part2_rules)}
              for role, rules in site.access.items()}
    access.setdefault("sud_treatment", {})
    return SitePolicy("part2", partners, access, site.intake_deadline_days, PURPOSES)


PART2_CONSENT_IDS = ("C0", "C1", "C2", "C3")
#: Disclosers that name the Part 2 program p1 or the case manager p0, or miss both.
PART2_DISCLOSERS = ("role:sud_treatment", "p1", "p0", "role:case_management", "p2",
                    "role:housing")


@st.composite
def part2_histories(draw: st.DrawFn, length: int = 12) -> list[Step]:
    """SUD records from the Part 2 program p1 and from the case manager p0, Part 2 consents
    complete or lacking an element, revocations, program exits and ticks."""
    steps: list[Step] = []
    at = T0
    for index in range(draw(st.integers(1, length))):
        at += timedelta(hours=draw(st.integers(0, 240)))
        kind = draw(st.sampled_from(("sud", "sud", "grant", "grant", "grant", "revoke", "exit",
                                     "tick")))
        event_id = str(uuid.UUID(int=index + 1, version=4))
        if kind == "tick":
            steps.append(Step(None, at))
            continue
        if kind == "sud":
            source = draw(st.sampled_from(("p1", "p1", "p0")))
            type_name = draw(st.sampled_from(("ServiceEncounter", "ServiceEnrolled",
                                              "IdentifierLinked")))
            if source == "p0":
                type_name = "ServiceEncounter"
            payload = payload_for(type_name, draw)
            if "service_type" in payload:
                payload["service_type"] = "SUD_TREATMENT"
            event = Event(event_id, type_name, PERSON, at, payload, source)
        elif kind == "grant":
            payload = {
                "consent_id": draw(st.sampled_from(PART2_CONSENT_IDS)),
                "recipients": draw(st.lists(st.sampled_from(ALL_RECIPIENTS), min_size=5,
                                            max_size=10, unique=True)),
                "categories": ["SUD_TREATMENT", *draw(st.lists(st.sampled_from(CATEGORIES),
                                                               max_size=2))],
                "purposes": list(PURPOSES),
                "valid_from": at,
                "expires_at": draw(st.one_of(st.none(), hours_after(at, 1, 2000))),
                "exceptions": [],
                "part2": draw(st.integers(0, 2)) > 0,
                "disclosing_programs": draw(st.lists(st.sampled_from(PART2_DISCLOSERS),
                                                     max_size=2, unique=True)),
                "expires_on_event": draw(st.sampled_from(EXPIRY_EVENTS)),
                "form_sha256": "ab" * 32,
            }
            event = Event(event_id, "ConsentGranted", PERSON, at, payload, "p0")
        elif kind == "revoke":
            event = Event(event_id, "ConsentRevoked", PERSON, at,
                          {"consent_id": draw(st.sampled_from(PART2_CONSENT_IDS))}, "p0")
        else:
            event = Event(event_id, "ParticipantExited", PERSON, at, {"reason": "GRADUATED"}, "p0")
        steps.append(Step(event, at))
    return steps


@PROPERTY_SETTINGS
@given(site=part2_sites(), steps=part2_histories())
def test_part2_records_open_only_under_complete_part2_consents(
    site: SitePolicy, steps: list[Step]
) -> None:
    """After every step: a Part 2 record reaches a partner other than its source only while an
    active Part 2 consent names the recipient, the source as discloser and has an expiry (not
    after expiry, revocation or program exit; never by an ``always`` rule), and carries the
    § 2.32 notice; the source always sees its own."""
    state, changes = run(site, steps, check=True)
    assert apply_changes({}, changes) == state.view_rows()
    own = state.view_rows().get("p1", {})
    assert all(e.event_id in own for e in accepted(site, steps) if e.source_partner == "p1")


def _grant(event_id: int, consent_id: str, at: datetime, data: st.DataObject) -> Event:
    draw = data.draw
    payload = {
        "consent_id": consent_id,
        "recipients": draw(st.lists(st.sampled_from(ALL_RECIPIENTS), min_size=1, unique=True)),
        "categories": draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True)),
        "purposes": list(PURPOSES),
        "valid_from": at,
        "expires_at": None,
        "exceptions": [],
        "part2": draw(st.booleans()),
        "form_sha256": "cd" * 32,
        **part2_elements(draw, False),
    }
    return Event(str(uuid.UUID(int=10_000 + event_id, version=4)), "ConsentGranted", PERSON, at,
                 payload, "p0")


@PROPERTY_SETTINGS
@given(site=sites(), steps=histories(), data=st.data())
def test_revoke_then_regrant_restores_exactly_what_the_new_consent_covers(
    site: SitePolicy, steps: list[Step], data: st.DataObject
) -> None:
    base = [s for s in steps if s.event is not None and not s.event.type.startswith("Consent")]
    if not base:
        return
    end = base[-1].now + timedelta(hours=1)
    old = _grant(1, "OLD", end, data)
    revocation = Event(str(uuid.UUID(int=20_000, version=4)), "ConsentRevoked", PERSON,
                       end + timedelta(hours=1), {"consent_id": "OLD"}, "p0")
    new = _grant(2, "NEW", end + timedelta(hours=2), data)
    cycled = [*base, Step(old, old.occurred_at), Step(revocation, revocation.occurred_at),
              Step(new, new.occurred_at)]
    direct = [*base, Step(new, new.occurred_at)]
    cycled_state, _ = run(site, cycled)
    direct_state, _ = run(site, direct)
    data_ids = {s.event.event_id for s in base if s.event is not None} | {
        e.event_id for e in direct_state.events.values() if e.source_partner == "hub"}

    def data_rows(state: ParticipantState) -> dict[str, dict[str, Any]]:
        return {
            recipient: {eid: row for eid, row in rows.items() if eid in data_ids}
            for recipient, rows in state.view_rows().items()
        }

    assert data_rows(cycled_state) == data_rows(direct_state)
    for rows in cycled_state.view_rows().values():
        assert all("OLD" not in row.consent_ids for row in rows.values())


