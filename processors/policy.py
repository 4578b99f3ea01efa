"""The decision: which rows and fields of an event one recipient may see. Pure.

A recipient sees a field of an event iff, and never past the golden-rule floor:

1. it is the event's source partner, or
2. the site says ``always`` for its role and the field's category, or
3. the site says ``with_consent`` and an active consent of the participant covers the recipient,
   the category and the recipient's purpose of use, with no exception denying it.

**Part 2 records** (42 CFR Part 2): data of category ``SUD_TREATMENT``, and everything a Part 2
program records (a partner of role ``sud_treatment`` or marked ``part2_program`` in the site
file). For them step 2 does not exist (an ``always`` counts as ``with_consent``) and step 3
takes a *Part 2 consent* that also names the record's source among its disclosing programs and
has an expiry (:meth:`processors.consent.Consent.opens_part2`). The source itself still sees
its own records (step 1).

It gets a row for the event iff it may see the event's row category (the fact the event
happened, after value-dependent categories); the row then carries only the visible fields.
Before any of that, :func:`admission` decides whether the event may affect the view at all:
events from partners the site does not know, of types the catalog does not know, or of a type
the source's role may not emit, change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from processors.consent import Consent, Recipient
from processors.floor import floor_forbids
from processors.site import PART2_CATEGORY, PART2_PROGRAM_ROLES, Access, Partner, SitePolicy
from schemas.catalog import Catalog
from schemas.event import Event

# PART2_CATEGORY: the category whose presence makes a row a Part 2 record.
# PART2_PROGRAM_ROLES: roles that are Part 2 programs whatever the site file says. Everything a
# Part 2 program (:attr:`processors.site.Partner.is_part2_program`) records is a Part 2 record,
# whatever its event type: even that it holds an id for a person, or did an intake, would say
# the person is its patient (42 CFR § 2.11, § 2.12(e)(3)). Its events' rows and fields are
# therefore all of category PART2_CATEGORY.

#: Memo key of one answer: (recipient id, category, recipient is the source, the source's id
#: when the answer depends on it — a Part 2 category from another partner — else None).
MemoKey = tuple[str, str, bool, str | None]

#: 42 CFR § 2.32(a)(1) (Statement 1, as amended 2024): accompanies every Part 2 disclosure.
REDISCLOSURE_NOTICE = (
    "This record which has been disclosed to you is protected by Federal confidentiality rules "
    "(42 CFR part 2). These rules prohibit you from using or disclosing this record, or "
    "testimony that describes the information contained in this record, in any civil, "
    "criminal, administrative, or legislative proceedings by any Federal, State, or local "
    "authority, against the patient, unless authorized by the consent of the patient, except "
    "as provided at 42 CFR 2.12(c)(5) or as authorized by a court in accordance with 42 CFR "
    "2.64 or 2.65. In addition, the Federal rules prohibit you from making any other use or "
    "disclosure of this record unless at least one of the following applies: (A) Further use "
    "or disclosure is expressly permitted by the written consent of the individual whose "
    "information is being disclosed in this record or as otherwise permitted by 42 CFR part 2. "
    "(B) You are a covered entity or business associate and have received the record for "
    "treatment, payment, or health care operations, or (C) You have received the record from "
    "a covered entity or business associate as permitted by 45 CFR part 164, subparts A and E. "
    "A general authorization for the release of medical or other information is NOT sufficient "
    "to meet the required elements of written consent to further use or redisclose the record "
    "(see 42 CFR 2.31)."
)


class Rejection(StrEnum):
    """Why an event changes nothing in the view (a stable code for logs and metrics)."""

    UNKNOWN_PARTNER = "unknown_partner"
    UNKNOWN_TYPE = "unknown_type"
    EMITTER_NOT_ALLOWED = "emitter_not_allowed"


@dataclass(frozen=True, slots=True)
class Basis:
    """Whether a recipient may see one category, and which consents say so (if any)."""

    visible: bool
    consent_ids: tuple[str, ...] = ()
    part2: bool = False


HIDDEN = Basis(visible=False)
OPEN = Basis(visible=True)


@dataclass(frozen=True, slots=True)
class RowDecision:
    """What one recipient sees of one event: its visible fields and why."""

    fields: tuple[str, ...]
    categories: tuple[str, ...]
    consent_ids: tuple[str, ...]
    needs_notice: bool


def effective_access(site: SitePolicy, role: str, category: str) -> Access:
    """Return the site's rule for ``role`` and ``category`` with the golden-rule floor and the
    Part 2 rule applied: Part 2 records are never ``always`` (at most ``with_consent``)."""
    if floor_forbids(role, category):
        return Access.NEVER
    rule = site.access_for(role, category)
    if rule is Access.ALWAYS and category == PART2_CATEGORY:
        return Access.WITH_CONSENT
    return rule


def admission(site: SitePolicy, catalog: Catalog, event: Event) -> Rejection | None:
    """Return why ``event`` must change nothing, or None if it may be projected.

    A site partner must be the source, the catalog must know the type, and the source's role
    must be allowed to emit it. Events the hub derives itself (source ``hub``) never come
    through here: an outside event claiming to be from the hub is from an unknown partner.
    """
    partner = site.partner(event.source_partner)
    if partner is None:
        return Rejection.UNKNOWN_PARTNER
    if not catalog.knows(event.type):
        return Rejection.UNKNOWN_TYPE
    if not catalog.may_emit(partner.role, event.type):
        return Rejection.EMITTER_NOT_ALLOWED
    return None


def consent_basis(
    partner: Partner,
    category: str,
    consents: Iterable[Consent],
    now: datetime,
    source: Recipient | None = None,
) -> Basis:
    """Return the basis the participant's consents give ``partner`` for ``category`` at ``now``.

    Visible iff at least one consent covers the partner, the category and the partner's
    purpose — for the Part 2 category, only a consent that also opens Part 2 records of
    ``source`` (the record's source partner; None opens none); every such consent is listed
    (sorted) for disclosure accounting.
    """
    part2_record = category == PART2_CATEGORY
    covering = sorted(
        (
            c for c in consents
            if c.covers(partner, category, partner.purpose, now)
            and (not part2_record or c.opens_part2(source))
        ),
        key=lambda c: c.consent_id,
    )
    if not covering:
        return HIDDEN
    return Basis(
        visible=True,
        consent_ids=tuple(c.consent_id for c in covering),
        part2=any(c.part2 for c in covering),
    )


def category_basis(
    site: SitePolicy,
    partner: Partner,
    category: str,
    source_partner: str | None,
    consents: Iterable[Consent],
    now: datetime,
) -> Basis:
    """Return whether ``partner`` may see ``category`` of an event from ``source_partner``
    (the ladder of :meth:`AccessRules.basis`, for one question)."""
    return AccessRules(site).basis(partner, category, partner.id == source_partner,
                                   list(consents), now, {}, site.partner(source_partner))


class AccessRules:
    """The decision for one site, with the consent-independent answers remembered.

    Whether a role may see a category by the floor, by own source or by an ``always`` or
    ``never`` rule never changes for a site, so it is worked out once; ``with_consent`` answers
    depend on the consents and the instant (and, for Part 2 records, on the source) and are
    remembered only in the ``memo`` the caller passes for one set of consents at one instant.
    """

    def __init__(self, site: SitePolicy) -> None:
        self._site = site
        self._static: dict[MemoKey, Basis] = {}

    def depends_on_consents(self, partner: Partner, categories: Iterable[str],
                            own: bool) -> bool:
        """True if the answer for any of ``categories`` can change with the consents (or the
        instant): only ``with_consent`` rules do; the floor, own source, ``always`` and
        ``never`` answer the same for every event of a kind, so callers may remember them."""
        return not own and any(
            effective_access(self._site, partner.role, category) is Access.WITH_CONSENT
            for category in categories)

    def basis(
        self,
        partner: Partner,
        category: str,
        own: bool,
        consents: Sequence[Consent],
        now: datetime,
        memo: dict[MemoKey, Basis],
        source: Partner | None = None,
    ) -> Basis:
        """Return whether ``partner`` (the event's source iff ``own``) may see ``category``;
        ``source`` is the event's source partner (None: not a site partner)."""
        discloser = source.id if source is not None and category == PART2_CATEGORY else None
        key = (partner.id, category, own, None if own else discloser)
        found = self._static.get(key) or memo.get(key)
        if found is not None:
            return found
        if floor_forbids(partner.role, category):
            found = HIDDEN
        elif own:
            found = OPEN
        else:
            rule = effective_access(self._site, partner.role, category)
            if rule is Access.WITH_CONSENT:
                found = consent_basis(partner, category, consents, now, source)
                memo[key] = found
                return found
            found = OPEN if rule is Access.ALWAYS else HIDDEN
        self._static[key] = found
        return found

    def decide(
        self,
        partner: Partner,
        source_partner: str | None,
        row_category: str,
        payload: Mapping[str, Any],
        field_categories: Mapping[str, str],
        consents: Sequence[Consent],
        now: datetime,
        memo: dict[MemoKey, Basis],
    ) -> RowDecision | None:
        """Return what ``partner`` sees of an event, or None if it gets no row at all.

        Fields keep payload order; a field without a resolved category is hidden (deny by
        default). ``needs_notice`` is True when the row carries SUD_TREATMENT data or any of its
        parts rests on a Part 2 consent. ``memo`` must be fresh for each (consents, now).
        """
        own = partner.id == source_partner
        source = self._site.partner(source_partner)
        row_basis = self.basis(partner, row_category, own, consents, now, memo, source)
        if not row_basis.visible:
            return None
        seen: dict[str, Basis] = {row_category: row_basis}
        visible: list[str] = []
        for name in payload:
            category = field_categories.get(name)
            if category is None:
                continue
            found = seen.get(category)
            if found is None:
                found = self.basis(partner, category, own, consents, now, memo, source)
                seen[category] = found
            if found.visible:
                visible.append(name)
        used = [basis for category, basis in seen.items() if basis.visible]
        categories = tuple(sorted(c for c, basis in seen.items() if basis.visible))
        consent_ids: tuple[str, ...] = ()
        part2 = False
        for basis in used:
            if basis.consent_ids:
                consent_ids = tuple(sorted({cid for b in used for cid in b.consent_ids}))
                part2 = any(b.part2 for b in used)
                break
        return RowDecision(
            fields=tuple(visible),
            categories=categories,
            consent_ids=consent_ids,
            needs_notice=part2 or PART2_CATEGORY in categories,
        )


def decide_row(
    site: SitePolicy,
    partner: Partner,
    source_partner: str | None,
    row_category: str,
    payload: Mapping[str, Any],
    field_categories: Mapping[str, str],
    consents: Iterable[Consent],
    now: datetime,
) -> RowDecision | None:
    """Return what ``partner`` sees of an event, or None if it gets no row (see
    :meth:`AccessRules.decide`; this one-off form remembers nothing)."""
    return AccessRules(site).decide(
        partner, source_partner, row_category, payload, field_categories, list(consents), now, {}
    )


__all__ = [
    "HIDDEN",
    "OPEN",
    "PART2_CATEGORY",
    "PART2_PROGRAM_ROLES",
    "REDISCLOSURE_NOTICE",
    "AccessRules",
    "Basis",
    "MemoKey",
    "Rejection",
    "RowDecision",
    "admission",
    "category_basis",
    "consent_basis",
    "decide_row",
    "effective_access",
]
