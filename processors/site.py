"""Site policy: who the partners are and what each role may see, loaded from YAML.

A site file (see ``config/site.example.yaml``) says, for one LEAD site:

- ``partners``: each partner's ``id`` (also its inbound topic ``lead.in.<id>``), ``role``,
  display ``name`` and the ``purpose`` of use it acts under; optionally ``part2_program: true``
  for a 42 CFR Part 2 program (every partner of role ``sud_treatment`` is one in any case):
  everything it records is a Part 2 record;
- ``access``: for each role and data category one of ``never | with_consent | always``;
  anything not listed is ``never`` (deny by default). Part 2 records (``SUD_TREATMENT``) are
  only ever ``with_consent`` or ``never``: they open only under a Part 2 consent;
- ``intake_deadline_days`` (7-30) for arrest-diversion referrals with charges held;
- ``purposes``: the purposes of use this site recognises;
- ``console`` (optional): the staff console's sign-in rules (:class:`ConsoleRules`): which
  roles must use a second factor (TOTP), the idle timeout, the session lifetime and after how
  many failed sign-ins an account locks.

Loading is strict: unknown keys, roles, categories or values are errors naming the key path and
what is allowed there. A file may not grant what the golden-rule floor forbids
(:mod:`processors.floor`), nor ``always`` for Part 2 records; both are enforced again at
decision time regardless of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from processors.errors import SiteError
from processors.floor import floor_forbids
from schemas.catalog import CATEGORIES, ROLES

#: Partner ids become Kafka topic names (``lead.in.<id>``): keep them to a safe alphabet.
PARTNER_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
#: Purposes of use are short identifiers (``care_coordination``).
PURPOSE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: The role and partner id the hub itself uses for derived events; no site partner may take them.
HUB = "hub"
#: Roles whose partners are Part 2 programs whatever the site file says (42 CFR § 2.11).
PART2_PROGRAM_ROLES = frozenset({"sud_treatment"})
#: The data category of Part 2 records: never ``always`` for anyone but the source.
PART2_CATEGORY = "SUD_TREATMENT"
MIN_INTAKE_DEADLINE_DAYS = 7
MAX_INTAKE_DEADLINE_DAYS = 30
DEFAULT_EXPIRY_SWEEP_SECONDS = 60

_TOP_LEVEL_KEYS = (
    "site",
    "intake_deadline_days",
    "expiry_sweep_seconds",
    "purposes",
    "partners",
    "access",
    "console",
)
_CONSOLE_KEYS = ("totp_required_roles", "idle_timeout_minutes", "session_hours",
                 "lockout_failures")
_PARTNER_KEYS = ("id", "role", "name", "purpose")
_PARTNER_OPTIONAL_KEYS = ("part2_program",)


class Access(StrEnum):
    """What a role may see of one data category."""

    NEVER = "never"
    WITH_CONSENT = "with_consent"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class Partner:
    """One organisation publishing to and reading from the hub."""

    id: str
    role: str
    name: str
    purpose: str
    #: Marked a 42 CFR Part 2 program in the site file (see :attr:`is_part2_program`).
    part2_program: bool = False

    @property
    def is_part2_program(self) -> bool:
        """True if the partner is a Part 2 program: marked so, or of a Part 2 program role.

        Everything a Part 2 program records is a Part 2 record, whatever its type.
        """
        return self.part2_program or self.role in PART2_PROGRAM_ROLES


@dataclass(frozen=True, slots=True)
class ConsoleRules:
    """The staff console's sign-in rules (the site file's optional ``console`` section)."""

    #: Roles whose staff must enter a TOTP code at sign-in.
    totp_required_roles: frozenset[str] = frozenset()
    #: A session unused for this long ends (minutes).
    idle_timeout_minutes: int = 15
    #: A session ends this long after sign-in, however busy (hours).
    session_hours: int = 12
    #: This many failed sign-ins in a row lock the account until an administrator resets it.
    lockout_failures: int = 5


@dataclass(frozen=True)
class SitePolicy:
    """A validated site policy. Build it with :func:`load_site` or :func:`parse_site`."""

    name: str
    partners: tuple[Partner, ...]
    access: Mapping[str, Mapping[str, Access]]
    intake_deadline_days: int
    purposes: tuple[str, ...]
    expiry_sweep_seconds: int = DEFAULT_EXPIRY_SWEEP_SECONDS
    console: ConsoleRules = field(default_factory=ConsoleRules)
    _by_id: Mapping[str, Partner] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {partner.id: partner for partner in self.partners})

    def partner(self, partner_id: str | None) -> Partner | None:
        """Return the partner with this id, or None if the site has no such partner."""
        if partner_id is None:
            return None
        return self._by_id.get(partner_id)

    def access_for(self, role: str, category: str) -> Access:
        """Return the file's rule for ``role`` and ``category``; ``never`` when not listed.

        This is the file's word only: callers must still apply the golden-rule floor.
        """
        return self.access.get(role, {}).get(category, Access.NEVER)

    def partner_ids(self) -> tuple[str, ...]:
        """Return every partner id, sorted (the recipients of the view)."""
        return tuple(sorted(self._by_id))


def load_site(path: str | Path) -> SitePolicy:
    """Read and validate a site policy YAML file; raise :class:`SiteError` if it is invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteError("", f"cannot read site file {str(path)!r}: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SiteError("", f"not valid YAML{where}; fix the syntax") from exc
    return parse_site(document)


def parse_site(document: Any) -> SitePolicy:
    """Validate an already-parsed site document (a mapping) and build a :class:`SitePolicy`."""
    root = _mapping(document, "")
    _only_keys(root, "", _TOP_LEVEL_KEYS)
    site_name = _string(root.get("site", "LEAD site"), "site")
    deadline = _integer(root.get("intake_deadline_days"), "intake_deadline_days")
    if not MIN_INTAKE_DEADLINE_DAYS <= deadline <= MAX_INTAKE_DEADLINE_DAYS:
        raise SiteError(
            "intake_deadline_days",
            f"must be between {MIN_INTAKE_DEADLINE_DAYS} and {MAX_INTAKE_DEADLINE_DAYS} days",
        )
    sweep = _integer(
        root.get("expiry_sweep_seconds", DEFAULT_EXPIRY_SWEEP_SECONDS), "expiry_sweep_seconds"
    )
    if not 1 <= sweep <= 86_400:
        raise SiteError("expiry_sweep_seconds", "must be between 1 and 86400 seconds")
    purposes = _purposes(root.get("purposes"))
    partners = _partners(root.get("partners"), purposes)
    access = _access(root.get("access", {}))
    console = _console(root.get("console", {}))
    return SitePolicy(
        name=site_name,
        partners=partners,
        access=access,
        intake_deadline_days=deadline,
        purposes=purposes,
        expiry_sweep_seconds=sweep,
        console=console,
    )


def _console(value: Any) -> ConsoleRules:
    entry = _mapping(value, "console")
    _only_keys(entry, "console", _CONSOLE_KEYS)
    defaults = ConsoleRules()
    roles = _list(entry.get("totp_required_roles", []), "console.totp_required_roles")
    for index, role in enumerate(roles):
        if role not in ROLES or role == HUB:
            raise SiteError(f"console.totp_required_roles[{index}]",
                            "must be one of " + _join([r for r in ROLES if r != HUB]))
    limits = {"idle_timeout_minutes": (1, 24 * 60), "session_hours": (1, 7 * 24),
              "lockout_failures": (1, 100)}
    numbers: dict[str, int] = {}
    for key, (low, high) in limits.items():
        number = _integer(entry.get(key, getattr(defaults, key)), f"console.{key}")
        if not low <= number <= high:
            raise SiteError(f"console.{key}", f"must be between {low} and {high}")
        numbers[key] = number
    return ConsoleRules(totp_required_roles=frozenset(str(r) for r in roles), **numbers)


def _purposes(value: Any) -> tuple[str, ...]:
    items = _list(value, "purposes")
    if not items:
        raise SiteError("purposes", "list at least one purpose of use (e.g. care_coordination)")
    purposes: list[str] = []
    for index, item in enumerate(items):
        path = f"purposes[{index}]"
        purpose = _string(item, path)
        if not PURPOSE_PATTERN.match(purpose):
            raise SiteError(path, "a purpose is lower_snake_case letters, digits and underscores")
        if purpose in purposes:
            raise SiteError(path, "listed twice; list each purpose once")
        purposes.append(purpose)
    return tuple(purposes)


def _partners(value: Any, purposes: tuple[str, ...]) -> tuple[Partner, ...]:
    items = _list(value, "partners")
    if not items:
        raise SiteError("partners", "list at least one partner")
    partners: list[Partner] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        path = f"partners[{index}]"
        entry = _mapping(item, path)
        _only_keys(entry, path, _PARTNER_KEYS + _PARTNER_OPTIONAL_KEYS)
        for key in _PARTNER_KEYS:
            if key not in entry:
                raise SiteError(
                    f"{path}.{key}", "missing; every partner has " + _join(_PARTNER_KEYS)
                )
        partner_id = _string(entry["id"], f"{path}.id")
        if not PARTNER_ID_PATTERN.match(partner_id) or partner_id == HUB:
            raise SiteError(
                f"{path}.id",
                "a partner id is lowercase letters, digits, '_' or '-' (starting with a letter, "
                f"at most 63 characters) and not the reserved id {HUB!r}",
            )
        if partner_id in seen:
            raise SiteError(f"{path}.id", f"partner id {partner_id!r} is used twice")
        seen.add(partner_id)
        role = _string(entry["role"], f"{path}.role")
        partner_roles = tuple(r for r in ROLES if r != HUB)
        if role not in partner_roles:
            raise SiteError(f"{path}.role", "must be one of " + _join(partner_roles))
        purpose = _string(entry["purpose"], f"{path}.purpose")
        if purpose not in purposes:
            raise SiteError(
                f"{path}.purpose", "must be one of the site's purposes: " + _join(purposes)
            )
        name = _string(entry["name"], f"{path}.name")
        part2 = entry.get("part2_program", role in PART2_PROGRAM_ROLES)
        if not isinstance(part2, bool):
            raise SiteError(f"{path}.part2_program", "must be true or false")
        if not part2 and role in PART2_PROGRAM_ROLES:
            raise SiteError(
                f"{path}.part2_program",
                f"a partner of role {role!r} is a 42 CFR Part 2 program; remove the key or "
                "set it to true",
            )
        partners.append(Partner(id=partner_id, role=role, name=name, purpose=purpose,
                                part2_program=part2))
    return tuple(partners)


def _access(value: Any) -> dict[str, dict[str, Access]]:
    table = _mapping(value, "access")
    allowed_values = tuple(access.value for access in Access)
    access: dict[str, dict[str, Access]] = {}
    for role_key, row in table.items():
        role = str(role_key)
        if role not in ROLES:
            raise SiteError(f"access.{role}", "unknown role; roles are " + _join(ROLES))
        rules = _mapping(row, f"access.{role}")
        access[role] = {}
        for category_key, rule in rules.items():
            category = str(category_key)
            path = f"access.{role}.{category}"
            if category not in CATEGORIES:
                raise SiteError(path, "unknown data category; categories are " + _join(CATEGORIES))
            if not isinstance(rule, str) or rule not in allowed_values:
                raise SiteError(path, "must be one of " + _join(allowed_values))
            if rule != Access.NEVER and floor_forbids(role, category):
                raise SiteError(
                    path,
                    f"the golden-rule floor forbids role {role!r} any {category} data, "
                    "whatever a site file or consent says; use 'never'",
                )
            if rule == Access.ALWAYS and category == PART2_CATEGORY:
                raise SiteError(
                    path,
                    f"{category} records are 42 CFR Part 2 records, disclosed only under a "
                    "Part 2 consent (42 CFR 2.31); use 'with_consent' or 'never'",
                )
            access[role][category] = Access(rule)
    return access


def _only_keys(entry: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    for key in entry:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise SiteError(where, "unknown key; allowed keys are " + _join(allowed))


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SiteError(path, "must be a mapping of keys to values")
    return {str(key): item for key, item in value.items()}


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise SiteError(path, "must be a list")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SiteError(path, "must be a non-empty string")
    return value


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SiteError(path, "must be a whole number")
    return value


def _join(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names)
