"""Participant consents, shaped like FHIR Consent, and the one question asked of them.

A consent is recorded by a ``ConsentGranted`` event and ended by ``ConsentRevoked`` (same
``consent_id``) or by reaching ``expires_at``. :meth:`Consent.covers` answers whether it lets
one partner see one data category for one purpose at a given instant; time is always passed
in, never read.

Recipients and exception recipients name a partner id (``spd``) or a whole role
(``role:case_management``). Empty recipient, category or purpose lists cover nothing; an
exception with an empty recipient or category list applies to every recipient or category
(denying more is the safe reading).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from processors.errors import PolicyError
from processors.timefmt import format_instant, parse_instant

ROLE_PREFIX = "role:"


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

    def is_active(self, now: datetime) -> bool:
        """Return True if the consent is in force at ``now``.

        In force means ``valid_from <= now``, before ``expires_at`` (exclusive) and before
        ``revoked_at`` (exclusive).
        """
        if now < self.valid_from:
            return False
        if self.expires_at is not None and now >= self.expires_at:
            return False
        return self.revoked_at is None or now < self.revoked_at

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
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Consent:
        """Rebuild a consent from :meth:`to_json` output."""
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

    ``valid_from`` defaults to the event's ``occurred_at`` when the payload leaves it out.
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
    )
