"""What the demo shows: one participant seen by four partners, with credentials to look.

:func:`pick_showcase` projects the simulated history offline (the same pure core the live
projector runs) and picks a participant whose views differ the most instructive way: police and
the prosecutor have rows, the case manager has clinical rows a consent allows, and the SUD
program has Part 2 rows carrying the redisclosure notice. :func:`showcase_queries` turns it into
copy-paste ``curl`` commands against the staff API; :func:`readme_values` gives the values that
make the README's staff and auditor examples answer on the demo's data, as one ``export`` line.
:func:`console_lines` says how to sign in to the staff console as the demo's users (one per
role of the site, :data:`CONSOLE_USERS`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from processors.offline import project_events
from processors.projector import Projector
from processors.site import SitePolicy
from processors.timefmt import format_instant
from schemas.event import Event

CLINICAL = frozenset({"SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"})

#: The roles shown side by side, with what each should see.
SHOWN_ROLES: tuple[tuple[str, str], ...] = (
    ("police", "police: program status and referrals only, never clinical data"),
    ("prosecutor", "prosecutor: + the legal case and whether intake was met; nothing clinical"),
    ("case_management", "case manager: everything the participant's consents allow"),
    ("sud_treatment", "SUD program (42 CFR Part 2): its rows carry the redisclosure notice"),
)
STAFF_USERS: Mapping[str, str] = {"police": "demo-officer", "prosecutor": "demo-prosecutor",
                                  "case_management": "demo-case-manager",
                                  "sud_treatment": "demo-counselor"}
#: The console user the demo makes for each role (its site's first partner of the role).
CONSOLE_USERS: Mapping[str, str] = {**STAFF_USERS, "defender": "demo-defender",
                                    "housing": "demo-housing",
                                    "mental_health": "demo-clinician",
                                    "coordinator": "demo-coordinator"}
CASE_MANAGER_TYPE = "CaseManagerAssigned"


@dataclass(frozen=True)
class Showcase:
    """The participant to look at, and the partner id playing each shown role.

    ``housing_from``: when the first HOUSING row of the participant in the case manager's view
    occurred (None if unknown).
    """

    participant_id: str
    partners: Mapping[str, str]  # role -> partner id
    housing_from: datetime | None = None


def partner_by_role(site: SitePolicy) -> dict[str, str]:
    """The first partner of each role in the site file."""
    found: dict[str, str] = {}
    for partner in site.partners:
        found.setdefault(partner.role, partner.id)
    return found


def pick_showcase(events: Sequence[Event], projector: Projector,
                  site: SitePolicy) -> Showcase | None:
    """The participant whose four views show the contrast earliest in ``events``; None if none.

    Qualifies: police and prosecutor have rows; the case manager has a clinical row justified
    by a consent and a HOUSING row; the SUD program has a row with the Part 2 notice. Among
    those, the one whose rows are all published earliest wins, so the printed queries answer
    soon.
    """
    roles = partner_by_role(site)
    if any(role not in roles for role, _ in SHOWN_ROLES):
        return None
    position = {event.event_id: index for index, event in enumerate(events)}
    view = project_events(events, projector)

    def first(recipient: str, keep: Any) -> dict[str, int]:
        earliest: dict[str, int] = {}
        for row in view.get(recipient, {}).values():
            if keep(row):
                at = position.get(row.event_id, len(events))  # hub-made rows: at the end
                earliest[row.participant_id] = min(at, earliest.get(row.participant_id, at))
        return earliest

    needs = [
        first(roles["police"], lambda row: True),
        first(roles["prosecutor"], lambda row: True),
        first(roles["case_management"],
              lambda row: row.consent_ids and CLINICAL & set(row.categories)),
        first(roles["sud_treatment"], lambda row: row.notice),
        first(roles["case_management"], lambda row: "HOUSING" in row.categories),
    ]
    common = set(needs[0]).intersection(*needs[1:])
    if not common:
        return None
    chosen = min(common, key=lambda p: (max(need[p] for need in needs), p))
    housing = min(row.occurred_at for row in view[roles["case_management"]].values()
                  if row.participant_id == chosen and "HOUSING" in row.categories)
    return Showcase(chosen, {role: roles[role] for role, _ in SHOWN_ROLES}, housing)


def curl(api_url: str, path: str, token: str, purpose: str) -> str:
    """A copy-paste ``curl`` command for one staff read."""
    return " ".join(["curl", "-s", "-H", shlex.quote(f"Authorization: Bearer {token}"),
                     "-H", shlex.quote(f"X-Purpose: {purpose}"),
                     shlex.quote(f"{api_url}{path}")])


def showcase_queries(showcase: Showcase, api_url: str, tokens: Mapping[str, str],
                     purposes: Mapping[str, str]) -> list[tuple[str, str]]:
    """(comment, command) pairs: each shown role's timeline of the same participant, and more."""
    pid = showcase.participant_id
    queries: list[tuple[str, str]] = []
    for role, what in SHOWN_ROLES:
        partner = showcase.partners[role]
        queries.append((f"{what} [{partner}]",
                        curl(api_url, f"/v1/participants/{pid}/timeline?limit=200",
                             tokens[partner], purposes[partner])))
    prosecutor = showcase.partners["prosecutor"]
    queries.append((f"the prosecutor's intake deadlines, met or missed [{prosecutor}]",
                    curl(api_url, "/v1/intake-deadlines?status=all&limit=20",
                         tokens[prosecutor], purposes[prosecutor])))
    manager = showcase.partners["case_management"]
    queries.append((f"the case manager's caseload [{manager}]",
                    curl(api_url, "/v1/participants?limit=20", tokens[manager],
                         purposes[manager])))
    return queries


def view_ready(rows_by_role: Mapping[str, Iterable[Mapping[str, Any]]]) -> bool:
    """True once the live view shows the contrast: the four checks of :func:`pick_showcase`."""
    rows = {role: list(found) for role, found in rows_by_role.items()}
    return bool(
        rows.get("police") and rows.get("prosecutor")
        and any(r.get("consent_ids") and CLINICAL & set(r.get("categories", ()))
                for r in rows.get("case_management", []))
        and any(r.get("notice") for r in rows.get("sud_treatment", [])))


#: The variables the demo sets for the README's examples, in the order it prints them.
README_VARIABLES: tuple[str, ...] = ("TOKEN", "P", "SINCE", "DUE_BEFORE", "FROM", "UNTIL")


def readme_values(showcase: Showcase, token: str, history_end: datetime, deadline_days: int,
                  streamed_from: datetime, ready_at: datetime) -> dict[str, str]:
    """Values of :data:`README_VARIABLES` that make the README's examples answer with rows.

    ``TOKEN``: the case manager's staff token; ``P``: the showcase participant; ``SINCE``: the
    midnight (UTC) before its first HOUSING row in the case manager's view (``occurred_at``);
    ``DUE_BEFORE``: the midnight after ``history_end`` + ``deadline_days``, so every intake
    deadline still pending is due before it; ``FROM``: ``streamed_from`` (the second before the
    first event was published) and ``UNTIL``: ``ready_at`` (the second after the live view
    showed the participant), both instants of the hub's clock (``received_at``): between them
    the showcase's records were received.
    """
    housing = showcase.housing_from or history_end
    since = datetime.combine(housing.astimezone(UTC).date(), time(), UTC)
    due = datetime.combine((history_end + timedelta(days=deadline_days + 1)).astimezone(UTC)
                           .date(), time(), UTC)
    start = streamed_from.replace(microsecond=0)
    until = ready_at.replace(microsecond=0) + timedelta(seconds=1)
    values = {"TOKEN": token, "P": showcase.participant_id, "SINCE": format_instant(since),
              "DUE_BEFORE": format_instant(due), "FROM": format_instant(start),
              "UNTIL": format_instant(until)}
    return {name: values[name] for name in README_VARIABLES}


def export_line(values: Mapping[str, str]) -> str:
    """``export NAME=value ...``: one line a POSIX shell runs to set ``values``."""
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


def console_user_name(role: str) -> str:
    """The demo's console user of ``role``."""
    return CONSOLE_USERS.get(role, "demo-" + role.replace("_", "-"))


def case_manager_of(events: Iterable[Event], participant_id: str) -> str | None:
    """The case manager the latest ``CaseManagerAssigned`` event of the participant names."""
    assigned = [e for e in events
                if e.type == CASE_MANAGER_TYPE and e.participant_id == participant_id]
    if not assigned:
        return None
    name = max(assigned, key=lambda e: (e.occurred_at, e.event_id)).payload.get("case_manager")
    return name if isinstance(name, str) else None


@dataclass(frozen=True)
class ConsoleUser:
    """A demo console user as printed: password (and TOTP secret) new for this run."""

    role: str
    partner: str
    user_name: str
    password: str
    totp_secret: str | None = None
    totp_uri: str | None = None
    display_name: str | None = None


def console_lines(console_url: str, users: Sequence[ConsoleUser], python: str) -> list[str]:
    """How to sign in to the console as each demo user, as printed lines (no trailing blanks).

    One ``console user`` line per user (name, partner, role, password; the display name the
    caseload's "assigned to me" matches, when it has one), then for a user with a second factor
    its TOTP secret and ``otpauth://`` URI, and how to get a code without an authenticator app.
    """
    lines = [f"Staff console: {console_url}/  (sign in as one of these users; passwords and "
             "TOTP secrets are new for this run and shown once; leadhub users list)"]
    for user in users:
        named = f"  display name: {user.display_name}" if user.display_name else ""
        lines.append(f"  console user  {user.user_name:18} {user.partner:16} {user.role:16} "
                     f"password: {user.password}{named}")
        if user.totp_secret is not None:
            lines.append(f"    TOTP secret: {user.totp_secret}  {user.totp_uri}")
    first = next((u for u in users if u.totp_secret is not None), None)
    if first is not None:
        lines.append(f"  # the current TOTP code of {first.user_name} without an authenticator "
                     "app (another user: put their secret in its place):")
        lines.append(f"  {python} -c \"import pyotp; print(pyotp.TOTP('{first.totp_secret}')"
                     ".now())\"")
    return lines
