"""A synthetic LEAD site history: referrals through three doors, intakes, services, legal events.

:func:`simulate` streams events in ``occurred_at`` order for any number of participants: each
participant's timeline is a generator with its own seeded ``random.Random`` that produces its
events week by week, and the timelines are merged with a heap. Memory grows with the number of
participants active at once, never with the length of the history. The same arguments always
give the same events (no global random, no clock).

Everything is made up: names come from short invented lists, phone numbers are 555-01xx,
organisations are the site's own. Every event's source partner has a role the catalog lets
emit that event type, so every event encodes. Consents are ConsentGranted version 2; a Part 2
consent carries every 42 CFR § 2.31 element the hub checks (recipients, the SUD program and the
case manager as disclosing programs, an expiry date or program exit), so the validator accepts
it and it opens the treatment rows to the case manager (and sometimes the defender).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from processors.site import SitePolicy
from producers.timeline import DOOR_WEIGHTS, Cast, Timeline
from schemas.catalog import Catalog
from schemas.errors import HubError
from schemas.event import Event

__all__ = ["DOOR_WEIGHTS", "SimulationError", "cast_of", "simulate"]


class SimulationError(HubError):
    """The simulator was asked for something it cannot produce (bad arguments or site)."""


def cast_of(site: SitePolicy, catalog: Catalog) -> Cast:
    """Pick one partner per role; raise :class:`SimulationError` without police or case mgmt."""
    by_role: dict[str, str] = {}
    for partner in site.partners:
        by_role.setdefault(partner.role, partner.id)
    for needed in ("police", "case_management"):
        if needed not in by_role:
            raise SimulationError(f"the site needs a {needed} partner to simulate a LEAD site")
    if not catalog.knows("IntakeCompleted"):
        raise SimulationError("the catalog lacks IntakeCompleted; is it the leadhub catalog?")
    return Cast(by_role)


def simulate(
    site: SitePolicy,
    catalog: Catalog,
    participants: int,
    days: int,
    seed: int,
    start: datetime,
) -> Iterator[Event]:
    """Yield a synthetic history of ``participants`` people over ``days`` days from ``start``.

    Events come in ``occurred_at`` order (ties in a fixed order) and all fall before
    ``start + days``. Referrals arrive spread evenly over the period. Deterministic for a seed.
    """
    if participants < 0 or days < 1:
        raise SimulationError("participants must be >= 0 and days >= 1")
    if start.tzinfo is None or start.utcoffset() != timedelta(0):
        raise SimulationError("start must be a timezone-aware UTC datetime")
    cast = cast_of(site, catalog)
    end = start + timedelta(days=days)
    period = timedelta(days=days)
    heap: list[tuple[datetime, int, int, Event, Iterator[Event]]] = []
    next_index = 0
    next_arrival: datetime | None = None
    arrival_rngs: dict[int, random.Random] = {}

    def arrival(index: int) -> datetime:
        rng = random.Random(f"leadhub-sim:{seed}:{index}")
        arrival_rngs[index] = rng
        moment = start + period * ((index + rng.random()) / participants)
        return moment.replace(microsecond=0)

    def admit(index: int, at: datetime) -> None:
        rng = arrival_rngs.pop(index)
        timeline = Timeline(rng, cast, site.intake_deadline_days, at, end).events()
        _push(heap, index, 0, timeline)

    if participants:
        next_arrival = arrival(0)
    sequence: dict[int, int] = {}
    while heap or next_arrival is not None:
        while next_arrival is not None and (not heap or next_arrival <= heap[0][0]):
            admit(next_index, next_arrival)
            next_index += 1
            next_arrival = arrival(next_index) if next_index < participants else None
        if not heap:
            continue
        _, index, _, event, timeline = heapq.heappop(heap)
        yield event
        sequence[index] = sequence.get(index, 0) + 1
        if not _push(heap, index, sequence[index], timeline):
            sequence.pop(index, None)


def _push(
    heap: list[tuple[datetime, int, int, Event, Iterator[Event]]],
    index: int,
    sequence: int,
    timeline: Iterator[Event],
) -> bool:
    event = next(timeline, None)
    if event is None:
        return False
    heapq.heappush(heap, (event.occurred_at, index, sequence, event, timeline))
    return True
