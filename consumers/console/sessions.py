"""Console sessions: server-side rows in the accounts database, found by a cookie token.

Why rows and not signed cookies: a session must end *now* when its user signs out, is disabled
or gets a new password, and the idle timeout needs the time of the last request, which a
signed cookie could only carry by being re-issued on every page. A row does all of that with
one indexed read per page, and a write of its last use only when the recorded one is
:data:`TOUCH_EVERY` old (so a page read is not a database write; the idle timeout then counts
from a last use up to a minute early: a session may end that much before its timeout, never
after). The cookie holds 32 random bytes; the table keeps
only their SHA-256 (a leaked table opens no session). Each session also has a public
``session_id`` that the access log carries (as ``key_id``), and its own CSRF token, which every
form posts back.

Time is the caller's clock: a session ends ``idle_timeout_minutes`` after its last request or
``session_hours`` after sign-in, whichever comes first (the site file's ``console`` section).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.errors import ServiceUnavailable
from consumers.api.tables import console_sessions, console_users
from processors.site import Partner, SitePolicy

#: A session's recorded last use is moved to now only when it is at least this old.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: who, for which partner, under which purpose (None until chosen);
    ``display_name``: the user's, if they have one."""

    session_id: str
    user_name: str
    partner: Partner
    purpose: str | None
    csrf_token: str
    display_name: str | None = None

    @property
    def assignee_name(self) -> str:
        """The name caseload lines give this user as case manager: the display name, else
        the user name."""
        return self.display_name or self.user_name

    def csrf_ok(self, presented: str | None) -> bool:
        """True if ``presented`` is this session's CSRF token (constant-time)."""
        return presented is not None and hmac.compare_digest(presented.encode(),
                                                             self.csrf_token.encode())


def token_hash(token: str) -> str:
    """The stored verifier of a session token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Sessions:
    """SQL adapter for console sessions."""

    def __init__(self, engine: Engine, site: SitePolicy,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.site = site
        self.clock = clock

    @property
    def idle(self) -> timedelta:
        """How long an unused session lives."""
        return timedelta(minutes=self.site.console.idle_timeout_minutes)

    @property
    def lifetime(self) -> timedelta:
        """How long any session lives."""
        return timedelta(hours=self.site.console.session_hours)

    def start(self, user_name: str, partner: Partner) -> tuple[str, Session]:
        """Open a session for a verified user; return (cookie token, session)."""
        token = secrets.token_urlsafe(32)
        session = Session(secrets.token_hex(8), user_name, partner, None,
                          secrets.token_urlsafe(32))
        now = self.clock()
        self._execute(insert(console_sessions).values(
            token_sha256=token_hash(token), session_id=session.session_id, user_name=user_name,
            purpose=None, csrf_token=session.csrf_token, created_at=now, last_seen_at=now,
            ended_at=None))
        return token, session

    def resume(self, token: str | None) -> Session | None:
        """The live session of a cookie token, its recorded last use moved to now if that is
        :data:`TOUCH_EVERY` old; None if there is none, it ended, timed out, or its user was
        disabled or locked."""
        if not token or len(token) > 128:
            return None
        s, u = console_sessions.c, console_users.c
        query = select(s.session_id, s.user_name, s.purpose, s.csrf_token, s.created_at,
                       s.last_seen_at, s.ended_at, u.partner, u.disabled_at, u.locked_at,
                       u.display_name).join(console_users, u.user_name == s.user_name).where(
            s.token_sha256 == token_hash(token))
        try:
            with self.engine.connect() as connection:
                row = connection.execute(query).first()
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the account database cannot be read; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc
        if row is None or row[6] is not None or row[8] is not None or row[9] is not None:
            return None
        now = self.clock()
        partner = self.site.partner(row[7])
        if (partner is None or now - _utc(row[5]) > self.idle
                or now - _utc(row[4]) > self.lifetime):
            self.end(token)
            return None
        if now - _utc(row[5]) >= TOUCH_EVERY:
            self._execute(update(console_sessions).where(
                s.token_sha256 == token_hash(token)).values(last_seen_at=now))
        return Session(row[0], row[1], partner, row[2], row[3], row[10])

    def choose_purpose(self, token: str, purpose: str) -> None:
        """Fix the session's purpose of use (once: a chosen purpose is never replaced)."""
        s = console_sessions.c
        self._execute(update(console_sessions).where(
            s.token_sha256 == token_hash(token), s.purpose.is_(None)).values(purpose=purpose))

    def end(self, token: str) -> None:
        """End the session (sign-out or timeout); idempotent."""
        s = console_sessions.c
        self._execute(update(console_sessions).where(
            s.token_sha256 == token_hash(token), s.ended_at.is_(None)).values(
            ended_at=self.clock()))

    def _execute(self, statement: object) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(statement)  # type: ignore[call-overload]
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the account database cannot be written; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc
