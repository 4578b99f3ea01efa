"""Participant consents, shaped like FHIR Consent, and the questions asked of them.

A consent is recorded by a ``ConsentGranted`` event and ended by ``ConsentRevoked`` (same
``consent_id``), by reaching ``expires_at``, or, if it says ``expires_on_event: PROGRAM_EXIT``,
by the participant's first ``ParticipantExited`` at or after it was signed.
:meth:`Consent.covers` answers whether it lets one partner see one data category for one
purpose at a given instant; time is always passed in, never read.

**42 CFR Part 2.** A Part 2 record (see :mod:`processors.policy`) is opened only by a consent
that :meth:`Consent.opens_part2` for the record's source: ``part2`` true, the source named among
``disclosing_programs`` (by id or ``role:<role>``) and an expiry (a date or an event), besides
naming the recipient like any consent (42 CFR § 2.31(a)). A ConsentGranted of version 1 cannot
carry ``disclosing_programs``, so it never opens a Part 2 record, whatever its ``part2`` flag.
:func:`check_part2_elements` is the same rule at the door: the validator and the HTTP gateway
reject a Part 2 consent lacking an element with ``INVALID_FIELD`` and its field path.

Recipients and exception recipients name a partner id (``spd``) or a whole role
(``role:case_management``). Empty recipient, category or purpose lists cover nothing; an
exception with an empty recipient or category list applies to every recipient or category
(denying more is the safe reading).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from processors.errors import PolicyError
from processors.site import HUB, PARTNER_ID_PATTERN
from processors.timefmt import format_instant, parse_instant
from schemas.catalog import ROLES
from schemas.errors import InvalidField

ROLE_PREFIX = "role:"
#: ``expires_on_event`` values and the event type that ends such a consent.
EXPIRY_EVENTS: Mapping[str, str] = {"PROGRAM_EXIT": "ParticipantExited"}
#: The event types that can end a consent by ``expires_on_event``.
EXPIRY_EVENT_TYPES = frozenset(EXPIRY_EVENTS.values())


class Recipient(Protocol):
    """What a consent needs to know about a partner: its id and its role."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...


def normalize_purpose(purpose: str) -> str:
    """Return the canonical (lowercase) spelling of a purpose of use: ``CARE_COORDINATION`` and
    ``care_coordination`` name the same purpose."""
    return purpose.strip().lower()


def names_recipient(names: frozenset[str], partner: Recipient) -> bool:
    """Return True if ``names`` lists the partner's id or ``role:<its role>``."""
    return partner.id in names or (ROLE_PREFIX + partner.role) in names


class ConsentState(StrEnum):
    """Where a consent stands at an instant (:meth:`Consent.state`)."""

    ACTIVE = "active"
    NOT_YET_IN_EFFECT = "not yet in effect"
    REVOKED = "revoked"
    ENDED_BY_EVENT = "ended by event"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ConsentException:
    """A deny provision: these recipients may not see these categories under the consent."""

    recipients: frozenset[str]
    categories: frozenset[str]

    def denies(self, partner: Recipient, category: str) -> bool:
        """Return True if this exception withholds ``category`` from ``partner``."""
        recipient_matches = not self.recipients or names_recipient(self.recipients, partner)
        category_matches = not self.categories or category in self.categories
        return recipient_matches and category_matches


@dataclass(frozen=True, slots=True)
class Consent:
    """One participant's consent to share, as granted, possibly revoked."""

    consent_id: str
    participant_id: str
    granted_event_id: str
    granted_by: str
    recipients: frozenset[str]
    categories: frozenset[str]
    purposes: frozenset[str]
    valid_from: datetime
    expires_at: datetime | None
    exceptions: tuple[ConsentException, ...]
    part2: bool
    form_sha256: str
    revoked_at: datetime | None = None
    #: Who may disclose under the consent: partner ids or ``role:<role>`` (ConsentGranted v2).
    disclosing_programs: frozenset[str] = frozenset()
    #: An event that ends the consent (a key of :data:`EXPIRY_EVENTS`), or None.
    expires_on_event: str | None = None
    #: When the consent was signed (the grant's occurred_at); None: ``valid_from``.
    granted_at: datetime | None = None
    #: When an ``expires_on_event`` event ended it (the first at or after ``granted_at``).
    ended_at: datetime | None = None

    def state(self, now: datetime) -> ConsentState:
        """Where the consent stands at ``now``: the one rule of a consent's lifetime.

        Active from ``valid_from`` (inclusive) until the first of ``revoked_at``, ``ended_at``
        and ``expires_at`` (each exclusive). Once past one of them, the state names it, in that
        order of precedence (a revoked consent reads "revoked" even after its expiry).
        """
        if self.revoked_at is not None and now >= self.revoked_at:
            return ConsentState.REVOKED
        if self.ended_at is not None and now >= self.ended_at:
            return ConsentState.ENDED_BY_EVENT
        if self.expires_at is not None and now >= self.expires_at:
            return ConsentState.EXPIRED
        if now < self.valid_from:
            return ConsentState.NOT_YET_IN_EFFECT
        return ConsentState.ACTIVE

    def is_active(self, now: datetime) -> bool:
        """Return True if the consent is in force at ``now`` (:meth:`state` is ACTIVE)."""
        return self.state(now) is ConsentState.ACTIVE

    def has_expiry(self) -> bool:
        """Return True if the consent says when it ends: a date or an event (§ 2.31(a)(6))."""
        return self.expires_at is not None or self.expires_on_event in EXPIRY_EVENTS

    def opens_part2(self, source: Recipient | None) -> bool:
        """Return True if this consent may open a Part 2 record that ``source`` recorded.

        It must be a Part 2 consent, name ``source`` (by id or role) among its disclosing
        programs and have an expiry. Whether it covers the recipient, the category and the
        purpose at an instant is :meth:`covers`' question, asked as well. A consent of
        ConsentGranted v1 names no disclosing program, so it never opens a Part 2 record.
        """
        return (
            self.part2
            and source is not None
            and names_recipient(self.disclosing_programs, source)
            and self.has_expiry()
        )

    def covers(self, partner: Recipient, category: str, purpose: str, now: datetime) -> bool:
        """Return True if this consent lets ``partner`` see ``category`` for ``purpose`` at ``now``.

        It must be in force at ``now``, name the partner (by id or role), list the category and
        the purpose, and no exception may deny the partner that category. The golden-rule floor
        is not this method's business: the decision applies it before any consent is asked.
        """
        return (
            self.is_active(now)
            and category in self.categories
            and normalize_purpose(purpose) in self.purposes
            and names_recipient(self.recipients, partner)
            and not any(exception.denies(partner, category) for exception in self.exceptions)
        )

    def revoked(self, at: datetime) -> Consent:
        """Return this consent revoked at ``at`` (an earlier revocation stands)."""
        if self.revoked_at is not None and self.revoked_at <= at:
            return self
        return replace(self, revoked_at=at)

    def ended_by(self, event_type: str, at: datetime) -> Consent:
        """Return this consent as an event of ``event_type`` that occurred at ``at`` leaves it.

        The event ends the consent at ``at`` when the consent expires on that kind of event and
        the event is not older than the consent's signing (an exit before it was signed, from
        an earlier stay in the program, ends nothing). An earlier end stands.
        """
        if self.expires_on_event is None or EXPIRY_EVENTS.get(self.expires_on_event) != event_type:
            return self
        signed = self.granted_at if self.granted_at is not None else self.valid_from
        if at < signed or (self.ended_at is not None and self.ended_at <= at):
            return self
        return replace(self, ended_at=at)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-native dict with a fixed key order; :meth:`from_json` inverts it."""
        return {
            "consent_id": self.consent_id,
            "participant_id": self.participant_id,
            "granted_event_id": self.granted_event_id,
            "granted_by": self.granted_by,
            "recipients": sorted(self.recipients),
            "categories": sorted(self.categories),
            "purposes": sorted(self.purposes),
            "valid_from": format_instant(self.valid_from),
            "expires_at": None if self.expires_at is None else format_instant(self.expires_at),
            "exceptions": [
                {"recipients": sorted(e.recipients), "categories": sorted(e.categories)}
                for e in self.exceptions
            ],
            "part2": self.part2,
            "form_sha256": self.form_sha256,
            "revoked_at": None if self.revoked_at is None else format_instant(self.revoked_at),
            "disclosing_programs": sorted(self.disclosing_programs),
            "expires_on_event": self.expires_on_event,
            "granted_at": None if self.granted_at is None else format_instant(self.granted_at),
            "ended_at": None if self.ended_at is None else format_instant(self.ended_at),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Consent:
        """Rebuild a consent from :meth:`to_json` output (the Part 2 keys may be absent: a
        consent stored before they existed has none)."""
        granted_at = obj.get("granted_at")
        ended_at = obj.get("ended_at")
        return cls(
            consent_id=obj["consent_id"],
            participant_id=obj["participant_id"],
            granted_event_id=obj["granted_event_id"],
            granted_by=obj["granted_by"],
            recipients=frozenset(obj["recipients"]),
            categories=frozenset(obj["categories"]),
            purposes=frozenset(obj["purposes"]),
            valid_from=parse_instant(obj["valid_from"]),
            expires_at=None if obj["expires_at"] is None else parse_instant(obj["expires_at"]),
            exceptions=tuple(
                ConsentException(frozenset(e["recipients"]), frozenset(e["categories"]))
                for e in obj["exceptions"]
            ),
            part2=bool(obj["part2"]),
            form_sha256=obj["form_sha256"],
            revoked_at=None if obj["revoked_at"] is None else parse_instant(obj["revoked_at"]),
            disclosing_programs=frozenset(obj.get("disclosing_programs") or ()),
            expires_on_event=obj.get("expires_on_event"),
            granted_at=None if granted_at is None else parse_instant(granted_at),
            ended_at=None if ended_at is None else parse_instant(ended_at),
        )


class _GrantEvent(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def participant_id(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def source_partner(self) -> str | None: ...


def consent_from_event(event: _GrantEvent) -> Consent:
    """Build a :class:`Consent` from a validated ``ConsentGranted`` event.

    ``valid_from`` defaults to the event's ``occurred_at`` when the payload leaves it out;
    ``granted_at`` is the event's ``occurred_at``. Payloads of ConsentGranted v1 (and payloads
    built without the v2 keys) give no disclosing programs and no expiry event. The consent is
    as granted: events that end it (:meth:`Consent.ended_by`) are the projector's to apply.
    Raises :class:`PolicyError` (naming the event id, never values) if the payload lacks
    ``consent_id``.
    """
    payload = event.payload
    consent_id = payload.get("consent_id")
    if not isinstance(consent_id, str) or not consent_id:
        raise PolicyError(f"event {event.event_id}: ConsentGranted without a consent_id")
    valid_from = payload.get("valid_from") or event.occurred_at
    expires_at = payload.get("expires_at")
    exceptions = tuple(
        ConsentException(
            recipients=frozenset(entry.get("recipients") or ()),
            categories=frozenset(entry.get("categories") or ()),
        )
        for entry in payload.get("exceptions") or ()
    )
    return Consent(
        consent_id=consent_id,
        participant_id=event.participant_id,
        granted_event_id=event.event_id,
        granted_by=event.source_partner or "",
        recipients=frozenset(payload.get("recipients") or ()),
        categories=frozenset(payload.get("categories") or ()),
        purposes=frozenset(normalize_purpose(p) for p in payload.get("purposes") or ()),
        valid_from=valid_from,
        expires_at=expires_at,
        exceptions=exceptions,
        part2=bool(payload.get("part2", False)),
        form_sha256=str(payload.get("form_sha256") or ""),
        disclosing_programs=frozenset(payload.get("disclosing_programs") or ()),
        expires_on_event=payload.get("expires_on_event"),
        granted_at=event.occurred_at,
    )


def check_part2_elements(payload: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidField` unless a ``ConsentGranted`` payload marked Part 2 has every
    element the hub needs of a 42 CFR § 2.31 consent; a payload not marked Part 2 passes.

    The elements, checked in this order, each named by its field path: ``payload.recipients``
    (non-empty, § 2.31(a)(4)), ``payload.disclosing_programs`` (non-empty, each a partner id
    or ``role:<known role>``, § 2.31(a)(2)), and an expiry, ``payload.expires_at`` or
    ``payload.expires_on_event`` (§ 2.31(a)(6)). Messages name fields, never values. A
    payload of ConsentGranted v1 has no disclosing programs, so a v1 Part 2 consent fails.
    """
    if payload.get("part2") is not True:
        return
    if not payload.get("recipients"):
        raise InvalidField(
            "payload.recipients: a Part 2 consent (part2 true) must name who may receive "
            "(42 CFR 2.31(a)(4)): partner ids or 'role:<role>'",
            field_path="payload.recipients",
        )
    programs = payload.get("disclosing_programs")
    if not programs:
        raise InvalidField(
            "payload.disclosing_programs: a Part 2 consent (part2 true) must name the "
            "program(s) that may disclose (42 CFR 2.31(a)(2)): partner ids or "
            "'role:sud_treatment'; ConsentGranted v1 cannot carry it, write version 2",
            field_path="payload.disclosing_programs",
        )
    for index, name in enumerate(programs):
        if not _names_a_discloser(name):
            path = f"payload.disclosing_programs[{index}]"
            raise InvalidField(
                f"{path}: name a partner id (lowercase letters, digits, '_' or '-') or "
                "'role:<role>' with one of the catalog's roles",
                field_path=path,
            )
    if payload.get("expires_at") is None and payload.get("expires_on_event") is None:
        raise InvalidField(
            "payload.expires_at: a Part 2 consent (part2 true) must say when it ends "
            "(42 CFR 2.31(a)(6)): set expires_at or expires_on_event",
            field_path="payload.expires_at",
        )


def _names_a_discloser(name: object) -> bool:
    """True for a partner id or ``role:<role>`` of a partner role (the hub's is no partner)."""
    if not isinstance(name, str):
        return False
    if name.startswith(ROLE_PREFIX):
        role = name.removeprefix(ROLE_PREFIX)
        return role in ROLES and role != HUB
    return PARTNER_ID_PATTERN.fullmatch(name) is not None
