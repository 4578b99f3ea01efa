"""Staff users of the console: create, list, disable, reset, and check a sign-in.

Passwords are stored only as argon2id hashes (argon2-cffi's defaults). A second factor is a
TOTP secret (RFC 6238, 30-second steps, pyotp); the site file's ``console.totp_required_roles``
says which roles must have one (a user of such a role is created with one, and cannot sign in
without it). A code is accepted one step early or late, and never twice (the last accepted step
is kept), so a code seen over someone's shoulder cannot be replayed.

A user may have a display name: the name the site's ``CaseManagerAssigned`` rows give them
("J. Rivera"), which the caseload's "assigned to me" filter matches (the user name when there
is none).

Lock-out: ``console.lockout_failures`` failed sign-ins in a row lock the account until an
administrator runs ``leadhub users reset-password``. Every failure looks the same to the
person signing in (unknown user, wrong password, wrong code, locked, disabled): one message,
and the password is hashed in every case, so timing does not tell them apart either.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from consumers.api.errors import CredentialError, ServiceUnavailable, Unauthorized
from consumers.api.tables import console_sessions, console_users
from processors.site import Partner, SitePolicy
from processors.timefmt import format_instant

USER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MAX_DISPLAY_NAME = 128
MIN_PASSWORD = 12
TOTP_ISSUER = "leadhub"
_hasher = PasswordHasher()
#: Hashed on an unknown user, so an unknown name costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def sign_in_failed() -> Unauthorized:
    """The one error of every failed sign-in (it never says which part was wrong)."""
    return Unauthorized("the user name, password or code is not right, or the account is "
                        "locked; try again or ask your administrator", code="SIGN_IN_FAILED")


@dataclass(frozen=True, slots=True)
class StaffUser:
    """A staff user as listed (never the password hash nor the TOTP secret)."""

    user_name: str
    partner: str
    has_totp: bool
    failures: int
    locked: bool
    disabled: bool
    created_at: datetime
    display_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"user": self.user_name, "name": self.display_name, "partner": self.partner,
                "totp": self.has_totp, "failures": self.failures, "locked": self.locked,
                "disabled": self.disabled,
                "created_at": format_instant(self.created_at)}


@dataclass(frozen=True, slots=True)
class IssuedPassword:
    """A user's new password (and TOTP secret, when one was made): shown once, never stored."""

    user: StaffUser
    password: str
    totp_secret: str | None

    @property
    def totp_uri(self) -> str | None:
        """The ``otpauth://`` URI an authenticator app reads (as a QR code or typed)."""
        if self.totp_secret is None:
            return None
        return pyotp.TOTP(self.totp_secret).provisioning_uri(name=self.user.user_name,
                                                            issuer_name=TOTP_ISSUER)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def clean_display_name(name: str | None) -> str | None:
    """A display name with its whitespace collapsed; None for a blank one. Raises
    :class:`CredentialError` if it is too long or holds control characters."""
    if name is None or not name.strip():
        return None
    cleaned = " ".join(name.split())
    if len(cleaned) > MAX_DISPLAY_NAME or not cleaned.isprintable():
        raise CredentialError(f"a display name is printable text of at most "
                              f"{MAX_DISPLAY_NAME} characters")
    return cleaned


def new_password() -> str:
    """A random password of 20 URL-safe characters (about 120 bits)."""
    return secrets.token_urlsafe(15)


def totp_step(secret: str, code: str, at: datetime, after_step: int | None) -> int | None:
    """The TOTP step ``code`` is valid for at ``at`` (one step of drift either way), if that
    step is later than ``after_step``; None otherwise. Compares in constant time."""
    totp = pyotp.TOTP(secret)
    clean = code.strip().replace(" ", "")
    found: int | None = None
    for drift in (-1, 0, 1):
        instant = at.timestamp() + drift * totp.interval
        step = int(instant // totp.interval)
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected.encode(), clean.encode()) and (
                after_step is None or step > after_step):
            found = step
    return found


class StaffUsers:
    """SQL adapter for staff users in the accounts database (one short transaction a call)."""

    def __init__(self, engine: Engine, site: SitePolicy,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.site = site
        self.clock = clock

    def totp_required(self, partner: Partner) -> bool:
        """True if the site requires a second factor of this partner's role."""
        return partner.role in self.site.console.totp_required_roles

    def create(self, user_name: str, partner_id: str, *, totp: bool = False,
               password: str | None = None, display_name: str | None = None
               ) -> IssuedPassword:
        """Create a user of ``partner_id`` with a new (or the given) password; a TOTP secret
        when asked or when the partner's role requires one; ``display_name`` if given."""
        partner = self.site.partner(partner_id)
        if partner is None:
            raise CredentialError(f"partner {partner_id!r} is not in the site file; partners "
                                  f"are {', '.join(self.site.partner_ids())}")
        if not USER_PATTERN.match(user_name):
            raise CredentialError("a user name is letters, digits and . _ @ - (at most 128)")
        secret = pyotp.random_base32() if totp or self.totp_required(partner) else None
        chosen = self._check_password(password)
        name = clean_display_name(display_name)
        now = self.clock()
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(console_users).values(
                    user_name=user_name, partner=partner_id, password_hash=_hasher.hash(chosen),
                    totp_secret=secret, totp_last_step=None, failures=0, locked_at=None,
                    disabled_at=None, created_at=now, display_name=name))
        except IntegrityError as exc:
            raise CredentialError(f"user {user_name!r} exists; use reset-password") from exc
        except SQLAlchemyError as exc:
            raise CredentialError("cannot write the console user table") from exc
        return IssuedPassword(self.get(user_name), chosen, secret)

    def reset_password(self, user_name: str, *, new_totp: bool = False,
                       password: str | None = None) -> IssuedPassword:
        """Give the user a new password, unlock the account and end its sessions; a new TOTP
        secret when asked (or when the role requires one and the user has none)."""
        current = self.get(user_name)
        partner = self.site.partner(current.partner)
        needs = partner is not None and self.totp_required(partner) and not current.has_totp
        chosen = self._check_password(password)
        values: dict[str, Any] = {"password_hash": _hasher.hash(chosen), "failures": 0,
                                  "locked_at": None}
        secret = None
        if new_totp or needs:
            secret = pyotp.random_base32()
            values.update(totp_secret=secret, totp_last_step=None)
        self._write(user_name, values)
        self.end_sessions(user_name)
        return IssuedPassword(self.get(user_name), chosen, secret)

    def set_display_name(self, user_name: str, display_name: str | None) -> StaffUser:
        """Set (or, with None or blank, clear) the user's display name."""
        self.get(user_name)
        self._write(user_name, {"display_name": clean_display_name(display_name)})
        return self.get(user_name)

    def disable(self, user_name: str) -> StaffUser:
        """Disable the user at once (idempotent) and end every session of theirs."""
        self.get(user_name)
        self._write(user_name, {"disabled_at": self.clock()},
                    extra=console_users.c.disabled_at.is_(None))
        self.end_sessions(user_name)
        return self.get(user_name)

    def end_sessions(self, user_name: str) -> None:
        """End every open session of the user."""
        try:
            with self.engine.begin() as connection:
                connection.execute(update(console_sessions).where(
                    console_sessions.c.user_name == user_name,
                    console_sessions.c.ended_at.is_(None)).values(ended_at=self.clock()))
        except SQLAlchemyError as exc:
            raise CredentialError("cannot write the console session table") from exc

    def get(self, user_name: str) -> StaffUser:
        """One user; :class:`CredentialError` if unknown."""
        found = [u for u in self.list() if u.user_name == user_name]
        if not found:
            raise CredentialError(f"no console user {user_name!r} (see 'leadhub users list')")
        return found[0]

    def list(self) -> list[StaffUser]:
        """Every user, by name."""
        c = console_users.c
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(select(
                    c.user_name, c.partner, c.totp_secret, c.failures, c.locked_at,
                    c.disabled_at, c.created_at, c.display_name).order_by(c.user_name)).all()
        except SQLAlchemyError as exc:
            raise CredentialError("cannot read the console user table") from exc
        return [StaffUser(r[0], r[1], r[2] is not None, int(r[3] or 0), r[4] is not None,
                          r[5] is not None, _utc(r[6]), r[7]) for r in rows]

    def verify(self, user_name: str, password: str, code: str) -> tuple[str, Partner]:
        """Check a sign-in; return (user name, partner). Raises :func:`sign_in_failed` for any
        failure, and counts it (locking the account at the site's limit)."""
        c = console_users.c
        try:
            with self.engine.connect() as connection:
                row = connection.execute(select(
                    c.partner, c.password_hash, c.totp_secret, c.totp_last_step, c.failures,
                    c.locked_at, c.disabled_at).where(c.user_name == user_name)).first()
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the account database cannot be read; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc
        password_ok = _password_matches(row[1] if row is not None else _DUMMY_HASH, password)
        if row is None:
            raise sign_in_failed()
        partner = self.site.partner(row[0])
        step = (totp_step(row[2], code, self.clock(), row[3]) if row[2] is not None else None)
        factor_ok = step is not None if row[2] is not None else (
            partner is not None and not self.totp_required(partner))
        usable = row[5] is None and row[6] is None and partner is not None
        if not (password_ok and factor_ok and usable) or partner is None:
            if row[5] is None and row[6] is None:
                failures = int(row[4] or 0) + 1
                locked = failures >= self.site.console.lockout_failures
                self._write(user_name, {"failures": failures,
                                        "locked_at": self.clock() if locked else None})
            raise sign_in_failed()
        self._write(user_name, {"failures": 0, "totp_last_step": step if step is not None
                                else row[3]})
        return user_name, partner

    def _check_password(self, password: str | None) -> str:
        if password is None:
            return new_password()
        if len(password) < MIN_PASSWORD:
            raise CredentialError(f"a password has at least {MIN_PASSWORD} characters")
        return password

    def _write(self, user_name: str, values: dict[str, Any], extra: Any = None) -> None:
        condition = console_users.c.user_name == user_name
        if extra is not None:
            condition = condition & extra
        try:
            with self.engine.begin() as connection:
                connection.execute(update(console_users).where(condition).values(**values))
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the account database cannot be written; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc


def _password_matches(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
