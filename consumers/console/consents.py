"""The person page's consent panel, read from the caller's own rows (pure: no I/O, no clock).

Only for a role the site lets see CONSENT data: :func:`may_see_consents`. The panel lists each
consent of the caller's ``ConsentGranted`` rows of one participant — what it covers (data
categories, purposes), whom it names (recipients, and for a Part 2 consent the programs that
may disclose), its exceptions, and when it ends — with its state as those same rows show it:
revoked (a ``ConsentRevoked`` row of the caller names it), ended by the participant's program
exit (``expires_on_event: PROGRAM_EXIT`` and a ``ParticipantExited`` row of the caller at or
after the signing), expired (``expires_at`` passed), not yet in effect (``valid_from`` ahead),
or active. That is a reading of the rows for people, like the caseload's intake deadlines; it
decides nothing: which rows anyone sees was decided by the projector when it wrote the view,
and the panel cannot show a consent the caller has no row of.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumers.api.caseload import parse_instant
from processors.site import Access, SitePolicy

GRANTED = "ConsentGranted"
REVOKED = "ConsentRevoked"
EXITED = "ParticipantExited"
#: The row types the panel reads.
PANEL_TYPES: tuple[str, ...] = (GRANTED, REVOKED, EXITED)
CONSENT_CATEGORY = "CONSENT"
ROLE_PREFIX = "role:"
#: Panel states, in the order the panel lists them.
STATES: tuple[str, ...] = ("active", "not yet in effect", "revoked", "ended at program exit",
                           "expired")


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


def consent_lines(rows: Sequence[Mapping[str, Any]], site: SitePolicy,
                  now: datetime) -> list[ConsentLine]:
    """The consents of one participant's rows (:data:`PANEL_TYPES`), active ones first, then
    by signing, latest first."""
    revoked: dict[str, datetime] = {}
    exits: list[datetime] = []
    for row in rows:
        fields = row.get("fields") or {}
        at = _instant(row.get("occurred_at"))
        if at is None:
            continue
        if row.get("type") == REVOKED and isinstance(fields.get("consent_id"), str):
            earlier = revoked.get(fields["consent_id"])
            revoked[fields["consent_id"]] = at if earlier is None else min(at, earlier)
        elif row.get("type") == EXITED:
            exits.append(at)
    lines: list[tuple[int, float, ConsentLine]] = []
    for row in rows:
        if row.get("type") != GRANTED:
            continue
        fields = row.get("fields") or {}
        signed = _instant(row.get("occurred_at"))
        if signed is None or not isinstance(fields.get("consent_id"), str):
            continue
        consent_id = fields["consent_id"]
        valid_from = _instant(fields.get("valid_from")) or signed
        expires_at = _instant(fields.get("expires_at"))
        on_exit = fields.get("expires_on_event") == "PROGRAM_EXIT"
        ended = min((at for at in exits if at >= signed), default=None) if on_exit else None
        revoked_at = revoked.get(consent_id)
        state = _state(now, valid_from, expires_at, revoked_at, ended)
        ends = " or ".join(part for part in (
            f"on {_show(expires_at)}" if expires_at else "",
            "at program exit" if on_exit else "") if part) or "no fixed end"
        line = ConsentLine(
            consent_id=consent_id, state=state, signed_at=_show(signed),
            recorded_by=name_of(str(row.get("source_partner")), site),
            valid_from=_show(valid_from) if valid_from != signed else None, ends=ends,
            part2=fields.get("part2") is True,
            categories=_strings(fields.get("categories")),
            purposes=tuple(p.replace("_", " ").lower() for p in _strings(fields.get("purposes"))),
            recipients=tuple(name_of(n, site) for n in _strings(fields.get("recipients"))),
            disclosing_programs=tuple(name_of(n, site)
                                      for n in _strings(fields.get("disclosing_programs"))),
            exceptions=tuple(_exception_text(e, site) for e in fields.get("exceptions") or ()),
            form_sha256=fields.get("form_sha256") if isinstance(fields.get("form_sha256"),
                                                                str) else None,
            revoked_at=_show(revoked_at) if revoked_at is not None else None,
            ended_at=_show(ended) if ended is not None else None)
        lines.append((STATES.index(state), -signed.timestamp(), line))
    return [line for _, _, line in sorted(lines, key=lambda t: (t[0], t[1],
                                                                 t[2].consent_id))]


def _state(now: datetime, valid_from: datetime, expires_at: datetime | None,
           revoked_at: datetime | None, ended: datetime | None) -> str:
    if revoked_at is not None and now >= revoked_at:
        return "revoked"
    if ended is not None and now >= ended:
        return "ended at program exit"
    if expires_at is not None and now >= expires_at:
        return "expired"
    if now < valid_from:
        return "not yet in effect"
    return "active"


def _show(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")
