"""The projector: ``project(state, event, now) -> (state, [ViewChange])``. Pure and deterministic.

One call takes one participant's state, one event of that participant and the instant to
evaluate consents and deadlines at, and returns the new state plus exactly the changes to every
recipient's view (every site partner is a recipient):

- an event from an unknown partner, of an unknown type or of a type its source's role may not
  emit, or a redelivery of an event already held (same event_id), changes nothing (time still
  advances, as in :meth:`Projector.tick`);
- an ordinary event adds one row per recipient allowed to see its row category;
- a consent grant or revocation, an event that ends consents (a program exit for consents that
  expire on it), or a consent starting or ending between the last instant and ``now``,
  re-projects the participant's history and emits only the differences;
- passing an intake deadline derives an ``IntakeDeadlineMissed`` event from the hub; an intake
  reported later that shows the deadline was met retracts it (see :mod:`processors.deadlines`).

**The view is a function of the set of events and the final instant.** Events of one
participant come from different partners' topics and may arrive in any order, each projected at
the hub's receive time. For any arrival order and any non-decreasing ``now`` values with each
``now`` >= its event's ``occurred_at``, the rows after a final ``tick(state, T)`` are the rows
of :func:`processors.offline.project_events` over the same events in ``(occurred_at,
event_id)`` order at ``T``. The rules that make this so:

- a deadline counts as missed only while no intake meeting it is known (see above);
- of two grants with the same consent_id, the one with the smallest ``(occurred_at,
  event_id)`` is the consent, whichever arrived first; a revocation names a consent_id and
  takes effect at ``min(occurred_at, now)`` (its occurred_at whenever now >= occurred_at), also
  when it arrives before its grant, and the earliest revocation stands;
- a consent that expires on an event (``expires_on_event``) ends at the ``occurred_at`` of the
  earliest such event of the participant at or after the consent's signing, whichever of the
  two arrived first;
- two *different* events reusing one event_id (a producer bug; a redelivery is the same event)
  resolve to the one with the smallest ``(occurred_at, type, source, payload)``: if that one
  arrives second, the participant's state is re-derived from its set of events.

No I/O, no clock reads, no globals: the same inputs always give the same outputs, so the live
pipeline and an auditor's replay agree.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from immutables import Map

from processors.consent import EXPIRY_EVENT_TYPES, Consent, consent_from_event
from processors.deadlines import (
    INTAKE_TYPE,
    already_met,
    deadline_for,
    derive_deadlines,
    due_deadlines,
    intake_meets,
    missed_event,
    misses_met_by,
)
from processors.errors import PolicyError
from processors.policy import (
    PART2_CATEGORY,
    AccessRules,
    Basis,
    MemoKey,
    RowDecision,
    admission,
)
from processors.site import HUB, Partner, SitePolicy
from processors.state import (
    ParticipantState,
    Rows,
    as_rows,
    build_row,
    require_history,
)
from processors.timefmt import value_to_json
from processors.view import RowShape, ViewChange, ViewRow
from schemas.catalog import Catalog, EventType
from schemas.event import Event

GRANT_TYPE = "ConsentGranted"
REVOKE_TYPE = "ConsentRevoked"

#: Types whose projection reads the participant's history (besides deadline-starting referrals).
_HISTORY_TYPES = frozenset({GRANT_TYPE, REVOKE_TYPE, INTAKE_TYPE, *EXPIRY_EVENT_TYPES})

Step = tuple[ParticipantState, list[ViewChange]]
#: Per kind of event: its field categories, and per recipient (partner, consent-free shape or
#: None, whether the answer depends on consents).
_Plan = tuple[dict[str, str], tuple[tuple[Partner, RowShape | None, bool], ...]]

__all__ = ["ParticipantState", "Projector", "Step", "ViewChange", "ViewRow"]


class Projector:
    """Turns events and clock ticks into per-recipient view changes for one site and catalog."""

    def __init__(self, site: SitePolicy, catalog: Catalog) -> None:
        self._site = site
        self._catalog = catalog
        self._recipients: tuple[Partner, ...] = tuple(
            partner for pid in site.partner_ids() if (partner := site.partner(pid)) is not None
        )
        self._event_types: dict[str, EventType] = {}
        self._rules = AccessRules(site)
        self._plans: dict[tuple[str, str, str | None, tuple[str, ...]], _Plan] = {}
        self._part2_sources = frozenset(
            partner.id for partner in self._recipients if partner.is_part2_program
        )

    @property
    def site(self) -> SitePolicy:
        """The site policy this projector applies."""
        return self._site

    def project(self, state: ParticipantState | None, event: Event, now: datetime) -> Step:
        """Apply ``event`` and the passage of time up to ``now``; return the new state and changes.

        ``state`` is None for a participant not seen before. Raises :class:`PolicyError` if the
        state belongs to another participant.
        """
        if state is None:
            state = ParticipantState(participant_id=event.participant_id)
        elif state.participant_id != event.participant_id:
            raise PolicyError(
                f"event {event.event_id} is for another participant than the state given"
            )
        now = _effective_now(state, now)
        held = state.events.get(event.event_id)
        if held is not None:
            if held == event or not self._displaces(event, held):
                return self._advance(state, now)
            events = state.events.set(event.event_id, event)
            return self._rebuild(state, events, now, replaced=(event.event_id,))
        if admission(self._site, self._catalog, event) is not None:
            return self._advance(state, now)
        return self._accept(state, event, now)

    def tick(self, state: ParticipantState, now: datetime) -> Step:
        """Apply the passage of time to ``now``: consents starting or ending, deadlines missed."""
        return self._advance(state, _effective_now(state, now))

    def reads_history(self, event: Event) -> bool:
        """Return True if projecting ``event`` will likely read its participant's whole history:
        a consent grant or revocation, an event that may end consents, a referral that starts
        an intake deadline, an intake. A hint for a reader of stored states (which it may read
        whole at once); the projector itself raises
        :class:`~processors.errors.HistoryNeeded` whenever a step needs what a state lacks.
        """
        return (
            event.type in _HISTORY_TYPES
            or deadline_for(event, self._site.intake_deadline_days) is not None
        )

    def next_due(self, state: ParticipantState) -> datetime | None:
        """Return the earliest instant after ``state.as_of`` at which a tick may change the view.

        A pending deadline is missed just after its due instant; a consent starts at
        ``valid_from`` and ends at ``expires_at``, ``revoked_at`` or ``ended_at``. None: no
        timer pending.
        """
        moments = [deadline.due_at for deadline in state.deadlines.values()]
        for consent in state.consents.values():
            moments.extend(
                moment
                for moment in (consent.valid_from, consent.expires_at, consent.revoked_at,
                               consent.ended_at)
                if moment is not None and (state.as_of is None or moment > state.as_of)
            )
        return min(moments, default=None)

    # -- steps -------------------------------------------------------------------------------

    def _advance(self, state: ParticipantState, now: datetime) -> Step:
        changes: list[ViewChange] = []
        if _activity_changed(state, now):
            require_history(state)
            rows, changes = self._reproject(
                state.participant_id, state.events, state.consents, state.rows, now
            )
            state = replace(state, rows=rows)
        state, missed = self._fire_deadlines(state, now)
        return replace(state, as_of=now), changes + missed

    def _accept(self, state: ParticipantState, event: Event, now: datetime) -> Step:
        events = state.events.set(event.event_id, event)
        consents = state.consents
        orphans = state.orphan_revocations
        deadlines = state.deadlines
        rows = state.rows
        changes: list[ViewChange] = []
        consents_changed = False
        if event.type == GRANT_TYPE:
            require_history(state)
            consent = _ended_by_held(consent_from_event(event), events.values())
            current = consents.get(consent.consent_id)
            if current is None:
                revoked_at = orphans.get(consent.consent_id)
                if revoked_at is not None:
                    consent = consent.revoked(revoked_at)
                    orphans = {k: v for k, v in orphans.items() if k != consent.consent_id}
                consents = {**consents, consent.consent_id: consent}
                consents_changed = True
            elif _grant_precedes(event, events.get(current.granted_event_id)):
                # An earlier grant of the same consent_id arrived late: it is the consent.
                if current.revoked_at is not None:
                    consent = consent.revoked(current.revoked_at)
                consents = {**consents, consent.consent_id: consent}
                consents_changed = True
        elif event.type == REVOKE_TYPE:
            consents, orphans = _revoke(consents, orphans, event, now)
            consents_changed = True
        elif event.type in EXPIRY_EVENT_TYPES:
            ended = {k: c.ended_by(event.type, event.occurred_at) for k, c in consents.items()}
            if ended != consents:
                consents = ended
                consents_changed = True
        started = deadline_for(event, self._site.intake_deadline_days)
        if started is not None:
            require_history(state)
            if not already_met(started, events.values()):
                deadlines = {**deadlines, started.referral_event_id: started}
        if event.type == INTAKE_TYPE:
            require_history(state)
            deadlines = {k: d for k, d in deadlines.items() if not intake_meets(event, d)}
            met = misses_met_by(event, events)
            if met:  # an on-time intake reported after the miss was derived: the miss goes
                events = _without(events, met)
                rows, changes = _drop(state.participant_id, rows, met)
        if consents_changed or _activity_changed(state, now):
            require_history(state)
            rows, more = self._reproject(state.participant_id, events, consents, rows, now)
        else:
            rows, more = self._add_event_rows(state.participant_id, rows, event, consents, now)
        changes.extend(more)
        next_state = ParticipantState(
            participant_id=state.participant_id,
            as_of=now,
            events=events,
            consents=consents,
            orphan_revocations=orphans,
            deadlines=deadlines,
            rows=rows,
            complete=state.complete,
        )
        if deadlines:
            next_state, missed = self._fire_deadlines(next_state, now)
            changes.extend(missed)
        return next_state, changes

    def _displaces(self, event: Event, held: Event) -> bool:
        """Return True if ``event`` reuses ``held``'s event_id and must take its place.

        Hub-derived events are never displaced; a rejected event displaces nothing.
        """
        return (
            held.source_partner != HUB
            and admission(self._site, self._catalog, event) is None
            and _identity(event) < _identity(held)
        )

    def _rebuild(
        self,
        state: ParticipantState,
        events: Mapping[str, Event],
        now: datetime,
        replaced: Collection[str],
    ) -> Step:
        """Re-derive consents, deadlines, misses and rows from the set of accepted events.

        The rare path (an event displacing another with the same event_id): everything is
        worked out from ``events`` and ``now`` alone, and only the differences are emitted.
        Rows of ``replaced`` event ids are re-sent whether or not their shape changed.
        """
        require_history(state)
        participant_id = state.participant_id
        outside = [event for event in events.values() if event.source_partner != HUB]
        consents, orphans = _derive_consents(outside, now)
        deadlines, derived = derive_deadlines(
            participant_id, outside, self._site.intake_deadline_days, now
        )
        merged = {event.event_id: event for event in outside}
        for missed in derived:
            merged.setdefault(missed.event_id, missed)
        gone = set(replaced) | (set(state.events) - set(merged))
        current = {
            recipient: {k: shape for k, shape in shapes.items() if k not in gone}
            for recipient, shapes in state.rows.items()
        }
        rows, changes = self._reproject(participant_id, merged, consents, current, now)
        for recipient, shapes in state.rows.items():
            for event_id in set(shapes) & gone:
                if event_id not in rows.get(recipient, {}):
                    changes.append(
                        ViewChange("retract", recipient, participant_id, event_id, None)
                    )
        next_state = ParticipantState(
            participant_id=participant_id,
            as_of=now,
            events=Map(merged),
            consents=consents,
            orphan_revocations=orphans,
            deadlines=deadlines,
            rows=rows,
        )
        return next_state, changes

    def _fire_deadlines(self, state: ParticipantState, now: datetime) -> Step:
        due = due_deadlines(state.deadlines.values(), now)
        if due:
            require_history(state)
        changes: list[ViewChange] = []
        for deadline in due:
            derived = missed_event(state.participant_id, deadline)
            remaining = {
                k: d for k, d in state.deadlines.items() if k != deadline.referral_event_id
            }
            state = replace(state, deadlines=remaining)
            if derived.event_id in state.events:
                continue
            rows, added = self._add_event_rows(
                state.participant_id, state.rows, derived, state.consents, now
            )
            state = replace(state, events=state.events.set(derived.event_id, derived), rows=rows)
            changes.extend(added)
        return state, changes

    # -- rows ----------------------------------------------------------------------------------

    def _add_event_rows(
        self,
        participant_id: str,
        current: Rows,
        event: Event,
        consents: Mapping[str, Consent],
        now: datetime,
    ) -> tuple[Rows, list[ViewChange]]:
        """Add the rows of one new event; nothing else can have changed.

        Costs the same whatever the participant's history: each recipient's rows are a
        persistent map, extended without copying.
        """
        shapes = self._shapes(event, _active(consents, now), now, {})
        if not shapes:
            return current, []
        changes: list[ViewChange] = []
        # a state's rows are persistent maps already (ParticipantState): one mutation of the
        # outer map for all recipients instead of a new map per recipient
        with (current if isinstance(current, Map) else as_rows(current)).mutate() as rows:
            for recipient, shape in shapes:
                held = rows.get(recipient)
                rows[recipient] = held.set(event.event_id, shape) if held is not None else Map(
                    {event.event_id: shape})
                changes.append(ViewChange("upsert", recipient, participant_id, event.event_id,
                                          build_row(recipient, event, shape)))
            added = rows.finish()
        return added, changes

    def _reproject(
        self,
        participant_id: str,
        events: Mapping[str, Event],
        consents: Mapping[str, Consent],
        current: Mapping[str, Mapping[str, RowShape]],
        now: datetime,
    ) -> tuple[Rows, list[ViewChange]]:
        """Re-derive every row of the participant and emit only the differences."""
        active = _active(consents, now)
        memo: dict[MemoKey, Basis] = {}
        fresh: dict[str, dict[str, RowShape]] = {}
        for event in events.values():
            for recipient, fresh_shape in self._shapes(event, active, now, memo):
                fresh.setdefault(recipient, {})[event.event_id] = fresh_shape
        changes: list[ViewChange] = []
        for partner in self._recipients:
            old: Mapping[str, RowShape] = current.get(partner.id) or {}
            new = fresh.get(partner.id, {})
            for event_id, event in events.items():
                shape = new.get(event_id)
                if shape is not None:
                    if old.get(event_id) != shape:
                        row = build_row(partner.id, event, shape)
                        changes.append(
                            ViewChange("upsert", partner.id, participant_id, event_id, row)
                        )
                elif event_id in old:
                    changes.append(
                        ViewChange("retract", partner.id, participant_id, event_id, None)
                    )
        return as_rows(fresh), changes

    def _shapes(
        self,
        event: Event,
        active: list[Consent],
        now: datetime,
        memo: dict[MemoKey, Basis],
    ) -> list[tuple[str, RowShape]]:
        """Return (recipient, shape) for every recipient that gets a row for ``event``.

        Recipients whose answer rests on no consent get a shape worked out once per kind of
        event (type, row category, source, payload keys); only the others are decided here,
        with ``memo`` remembering consent answers for this one set of ``active`` consents. The
        key is exactly what a consent-free decision reads: the type's schema, the row category
        (which carries the one value-dependent input, ``value_categories``, and through it every
        field's category), the source, and which fields are present; never time or consents.
        """
        event_type = self._event_type(event.type)
        payload = event.payload
        part2_source = event.source_partner in self._part2_sources
        row_category = PART2_CATEGORY if part2_source else event_type.event_category(payload)
        kind = (event.type, row_category, event.source_partner, tuple(payload))
        plan = self._plans.get(kind)
        if plan is None:
            plan = self._plan(event_type, event, row_category)
            self._plans[kind] = plan
        field_categories, steps = plan
        shapes: list[tuple[str, RowShape]] = []
        for partner, static_shape, consent_dependent in steps:
            if consent_dependent:
                decision = self._rules.decide(
                    partner, event.source_partner, row_category, payload, field_categories,
                    active, now, memo,
                )
                if decision is not None:
                    shapes.append((partner.id, _shape(decision)))
            elif static_shape is not None:
                shapes.append((partner.id, static_shape))
        return shapes

    def _plan(self, event_type: EventType, event: Event, row_category: str) -> _Plan:
        """Work out, once per kind of event, each recipient's consent-free answer."""
        field_categories = event_type.field_categories(event.payload)
        if event.source_partner in self._part2_sources:
            field_categories = {name: PART2_CATEGORY for name in field_categories}
        categories = {row_category, *(category for name in event.payload
                                      if (category := field_categories.get(name)) is not None)}
        steps: list[tuple[Partner, RowShape | None, bool]] = []
        for partner in self._recipients:
            own = partner.id == event.source_partner
            dependent = self._rules.depends_on_consents(partner, categories, own)
            static_shape = None
            if not dependent:
                decision = self._rules.decide(
                    partner, event.source_partner, row_category, event.payload,
                    field_categories, [], event.occurred_at, {},
                )
                static_shape = None if decision is None else _shape(decision)
            steps.append((partner, static_shape, dependent))
        return field_categories, tuple(steps)

    def _event_type(self, name: str) -> EventType:
        found = self._event_types.get(name)
        if found is None:
            found = self._catalog.latest(name)
            self._event_types[name] = found
        return found


def _shape(decision: RowDecision) -> RowShape:
    """The row's shape; field names sorted, as a stored row's JSON lists them, so a shape read
    back from the view (:func:`processors.view.shape_key_of_row`) equals the one decided."""
    return RowShape(
        tuple(sorted(decision.fields)), decision.categories, decision.consent_ids,
        decision.needs_notice,
    )


def _effective_now(state: ParticipantState, now: datetime) -> datetime:
    """Return ``now``, or the state's ``as_of`` if that is later: time never runs backwards."""
    if now.tzinfo is None:
        raise PolicyError("naive datetime for now: leadhub works in tz-aware UTC only")
    if state.as_of is not None and state.as_of > now:
        return state.as_of
    return now


def _active(consents: Mapping[str, Consent], now: datetime) -> list[Consent]:
    return [consent for consent in consents.values() if consent.is_active(now)]


def _activity_changed(state: ParticipantState, now: datetime) -> bool:
    """Return True if any consent started or ended between ``state.as_of`` and ``now``."""
    if state.as_of is None or state.as_of == now:
        return False
    as_of = state.as_of
    return any(c.is_active(as_of) != c.is_active(now) for c in state.consents.values())


def _without(events: Map[str, Event], event_ids: Collection[str]) -> Map[str, Event]:
    """``events`` without ``event_ids``."""
    mutable = events.mutate()
    for event_id in event_ids:
        mutable.pop(event_id, None)
    return mutable.finish()


def _drop(
    participant_id: str, rows: Rows, event_ids: Collection[str]
) -> tuple[Rows, list[ViewChange]]:
    """Remove the rows of ``event_ids`` from every recipient, with a retraction for each."""
    kept: dict[str, Mapping[str, RowShape]] = {}
    changes: list[ViewChange] = []
    for recipient, shapes in rows.items():
        if not any(event_id in shapes for event_id in event_ids):
            kept[recipient] = shapes
            continue
        remaining = {k: shape for k, shape in shapes.items() if k not in event_ids}
        changes.extend(
            ViewChange("retract", recipient, participant_id, event_id, None)
            for event_id in shapes
            if event_id in event_ids
        )
        if remaining:
            kept[recipient] = remaining
    return as_rows(kept), changes


def _grant_precedes(grant: Event, held: Event | None) -> bool:
    """Return True if ``grant`` comes before ``held`` by (occurred_at, event_id)."""
    return held is None or (grant.occurred_at, grant.event_id) < (held.occurred_at, held.event_id)


def _identity(event: Event) -> tuple[datetime, str, str, str]:
    """Return a total order key over events' content, to settle a reused event_id."""
    payload = {name: value_to_json(value) for name, value in event.payload.items()}
    return (
        event.occurred_at,
        event.type,
        event.source_partner or "",
        json.dumps(payload, sort_keys=True, separators=(",", ":")),
    )


def _derive_consents(
    events: Collection[Event], now: datetime
) -> tuple[dict[str, Consent], dict[str, datetime]]:
    """Return (consents, orphan revocations) as the set of ``events`` determines them."""
    grants: dict[str, Event] = {}
    revoked: dict[str, datetime] = {}
    for event in events:
        if event.type == GRANT_TYPE:
            consent_id = consent_from_event(event).consent_id
            if _grant_precedes(event, grants.get(consent_id)):
                grants[consent_id] = event
        elif event.type == REVOKE_TYPE:
            consent_id = str(event.payload.get("consent_id", ""))
            at = min(event.occurred_at, now)
            revoked[consent_id] = min(at, revoked.get(consent_id, at))
    consents: dict[str, Consent] = {}
    for consent_id, grant in grants.items():
        consent = _ended_by_held(consent_from_event(grant), events)
        revoked_at = revoked.get(consent_id)
        consents[consent_id] = consent if revoked_at is None else consent.revoked(revoked_at)
    orphans = {k: at for k, at in revoked.items() if k not in grants}
    return consents, orphans


def _ended_by_held(consent: Consent, events: Iterable[Event]) -> Consent:
    """``consent`` as the participant's events that end consents leave it (see
    :meth:`Consent.ended_by`); only a consent that expires on an event looks at them."""
    if consent.expires_on_event is None:
        return consent
    for event in events:
        if event.type in EXPIRY_EVENT_TYPES:
            consent = consent.ended_by(event.type, event.occurred_at)
    return consent


def _revoke(
    consents: Mapping[str, Consent],
    orphans: Mapping[str, datetime],
    event: Event,
    now: datetime,
) -> tuple[Mapping[str, Consent], Mapping[str, datetime]]:
    """Record a revocation; it takes effect at its occurred_at, or at ``now`` if that is earlier."""
    consent_id = str(event.payload.get("consent_id", ""))
    at = min(event.occurred_at, now)
    existing = consents.get(consent_id)
    if existing is not None:
        return {**consents, consent_id: existing.revoked(at)}, orphans
    previous = orphans.get(consent_id)
    if previous is not None and previous <= at:
        return consents, orphans
    return consents, {**orphans, consent_id: at}
