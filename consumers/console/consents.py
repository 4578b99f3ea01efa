"""The person page's consent panel, read from the caller's own rows (pure: no I/O, no clock).

Only for a role the site lets see CONSENT data: :func:`may_see_consents`. The panel lists each
consent of the caller's ``ConsentGranted`` rows of one participant — what it covers (data
categories, purposes), whom it names (recipients, and for a Part 2 consent the programs that
may disclose), its exceptions, and when it ends — with its state as those same rows show it:
revoked (a ``ConsentRevoked`` row of the caller names it), ended by the participant's program
exit (``expires_on_event: PROGRAM_EXIT`` and a ``ParticipantExited`` row of the caller at or
after the signing), expired (``expires_at`` passed), not yet in effect (``valid_from`` ahead),
or active: the policy core's :meth:`processors.consent.Consent.state` of the consent built from
those rows (the same lifetime rule the projector applies). That is a reading of the rows for
people, like the caseload's intake deadlines; it decides nothing: which rows anyone sees was
decided by the projector when it wrote the view, and the panel cannot show a consent the caller
has no row of.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumers.api.caseload import parse_instant
from processors.consent import Consent, ConsentState, consent_from_event
from processors.site import Access, SitePolicy

GRANTED = "ConsentGranted"
REVOKED = "ConsentRevoked"
EXITED = "ParticipantExited"
#: The row types the panel reads.
PANEL_TYPES: tuple[str, ...] = (GRANTED, REVOKED, EXITED)
CONSENT_CATEGORY = "CONSENT"
ROLE_PREFIX = "role:"
#: How the panel names each state of :meth:`Consent.state`, in the order it lists them.
STATE_LABELS: Mapping[ConsentState, str] = {
    ConsentState.ACTIVE: "active",
    ConsentState.NOT_YET_IN_EFFECT: "not yet in effect",
    ConsentState.REVOKED: "revoked",
    ConsentState.ENDED_BY_EVENT: "ended at program exit",
    ConsentState.EXPIRED: "expired",
}
STATES: tuple[str, ...] = tuple(STATE_LABELS.values())


@dataclass(frozen=True, slots=True)
class ConsentLine:
    """One consent as the panel shows it (names already spelled for people)."""

    consent_id: str
    state: str
    signed_at: str
    recorded_by: str
    valid_from: str | None
    ends: str
    part2: bool
    categories: tuple[str, ...]
    purposes: tuple[str, ...]
    recipients: tuple[str, ...]
    disclosing_programs: tuple[str, ...]
    exceptions: tuple[str, ...]
    form_sha256: str | None
    revoked_at: str | None
    ended_at: str | None


def may_see_consents(site: SitePolicy, role: str) -> bool:
    """True if the site file lets ``role`` see CONSENT data at all (always or with consent)."""
    return site.access_for(role, CONSENT_CATEGORY) is not Access.NEVER


def name_of(name: str, site: SitePolicy) -> str:
    """A recipient as people read it: the partner's name, or every partner of a role."""
    if name.startswith(ROLE_PREFIX):
        role = name[len(ROLE_PREFIX):]
        return f"every {role.replace('_', ' ')} partner"
    partner = site.partner(name)
    return f"{partner.name} ({partner.id})" if partner is not None else name


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _exception_text(value: Any, site: SitePolicy) -> str:
    fields = value if isinstance(value, Mapping) else {}
    who = ", ".join(name_of(n, site) for n in _strings(fields.get("recipients"))) or "everyone"
    what = ", ".join(_strings(fields.get("categories"))) or "every category"
    return f"not {what} to {who}"


@dataclass(frozen=True, slots=True)
class _GrantRow:
    """A ConsentGranted view row in the shape :func:`consent_from_event` reads."""

    event_id: str
    participant_id: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    source_partner: str | None


def consent_lines(rows: Sequence[Mapping[str, Any]], site: SitePolicy,
                  now: datetime) -> list[ConsentLine]:
    """The consents of one participant's rows (:data:`PANEL_TYPES`), active ones first, then
    by signing, latest first. Each consent's state is the policy core's
    (:meth:`processors.consent.Consent.state`), with the revocations and program exits these
    rows show applied as the projector applies them."""
    revocations: list[tuple[str, datetime]] = []
    exits: list[datetime] = []
    for row in rows:
        fields = row.get("fields") or {}
        at = _instant(row.get("occurred_at"))
        if at is None:
            continue
        if row.get("type") == REVOKED and isinstance(fields.get("consent_id"), str):
            revocations.append((fields["consent_id"], at))
        elif row.get("type") == EXITED:
            exits.append(at)
    lines: list[tuple[int, float, ConsentLine]] = []
    for row in rows:
        fields = row.get("fields") or {}
        signed = _instant(row.get("occurred_at"))
        if (row.get("type") != GRANTED or signed is None
                or not isinstance(fields.get("consent_id"), str)):
            continue
        consent = _consent(row, fields, signed, revocations, exits)
        state = STATE_LABELS[consent.state(now)]
        on_exit = consent.expires_on_event == "PROGRAM_EXIT"
        ends = " or ".join(part for part in (
            f"on {_show(consent.expires_at)}" if consent.expires_at else "",
            "at program exit" if on_exit else "") if part) or "no fixed end"
        line = ConsentLine(
            consent_id=consent.consent_id, state=state, signed_at=_show(signed),
            recorded_by=name_of(str(row.get("source_partner")), site),
            valid_from=_show(consent.valid_from) if consent.valid_from != signed else None,
            ends=ends, part2=consent.part2,
            categories=_strings(fields.get("categories")),
            purposes=tuple(p.replace("_", " ").lower() for p in _strings(fields.get("purposes"))),
            recipients=tuple(name_of(n, site) for n in _strings(fields.get("recipients"))),
            disclosing_programs=tuple(name_of(n, site)
                                      for n in _strings(fields.get("disclosing_programs"))),
            exceptions=tuple(_exception_text(e, site) for e in fields.get("exceptions") or ()),
            form_sha256=fields.get("form_sha256") if isinstance(fields.get("form_sha256"),
                                                                str) else None,
            revoked_at=_show(consent.revoked_at) if consent.revoked_at is not None else None,
            ended_at=_show(consent.ended_at) if consent.ended_at is not None else None)
        lines.append((STATES.index(state), -signed.timestamp(), line))
    return [line for _, _, line in sorted(lines, key=lambda t: (t[0], t[1],
                                                                 t[2].consent_id))]


def _consent(row: Mapping[str, Any], fields: Mapping[str, Any], signed: datetime,
             revocations: Sequence[tuple[str, datetime]],
             exits: Sequence[datetime]) -> Consent:
    """The core's Consent of a ConsentGranted row, revoked and ended as the rows say."""
    payload = {**fields, "valid_from": _instant(fields.get("valid_from")),
               "expires_at": _instant(fields.get("expires_at"))}
    source = row.get("source_partner")
    consent = consent_from_event(_GrantRow(str(row.get("event_id") or ""), "", signed, payload,
                                           source if isinstance(source, str) else None))
    for consent_id, at in revocations:
        if consent_id == consent.consent_id:
            consent = consent.revoked(at)
    for at in exits:
        consent = consent.ended_by(EXITED, at)
    return consent


def _show(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")
