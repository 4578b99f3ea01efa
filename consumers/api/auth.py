"""Credentials: partner API keys (publish only) and staff tokens (read only), stored hashed.

A secret is ``lh_<key_id>_<random>``: 32 random bytes from :mod:`secrets`, so a plain SHA-256
is a sound verifier (no password stretching needed for high-entropy secrets). The store keeps
only the hash; the secret is shown once when the key is created or rotated. Lookup is by the
key id embedded in the secret, then the hashes are compared in constant time.

The caller's partner comes from the credential only — never from a header or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.errors import CredentialError, Forbidden, ServiceUnavailable, Unauthorized
from consumers.api.tables import api_credentials
from processors.site import Partner, SitePolicy
from processors.timefmt import format_instant

Kind = Literal["partner", "staff"]
KINDS: tuple[Kind, ...] = ("partner", "staff")
_SECRET = re.compile(r"^lh_(?P<key_id>k[0-9a-f]{16})_(?P<random>[A-Za-z0-9_-]{43})$")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the credential's key id, kind, partner (from the site) and user."""

    key_id: str
    kind: Kind
    partner: Partner
    user: str | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A credential as listed: everything but the secret (which is never stored)."""

    key_id: str
    kind: str
    partner: str
    user: str | None
    created_at: datetime
    revoked_at: datetime | None
    replaced_by: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (instants as ISO 8601 UTC)."""
        return {
            "key_id": self.key_id,
            "kind": self.kind,
            "partner": self.partner,
            "user": self.user,
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created credential and its secret (shown once, never stored)."""

    info: KeyInfo
    secret: str


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 of ``secret`` (the stored verifier)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> tuple[str, str]:
    """Return a fresh (key_id, secret) pair; the secret embeds the key id."""
    key_id = "k" + secrets.token_hex(8)
    return key_id, f"lh_{key_id}_{secrets.token_urlsafe(32)}"


def parse_bearer(header: str | None) -> str:
    """Return the secret of an ``Authorization: Bearer <secret>`` header; 401 if absent/bad."""
    if not header:
        raise Unauthorized("send 'Authorization: Bearer <secret>' with a partner key or "
                           "staff token", code="MISSING_CREDENTIAL")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <secret>'",
                           code="MISSING_CREDENTIAL")
    return value.strip()


def _iso(value: datetime) -> str:
    return format_instant(_utc(value))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CredentialStore:
    """SQL adapter for credentials. Thread-safe (one short transaction per call).

    ``reader`` (default ``engine``) serves :meth:`authenticate`, which runs on every request:
    the API passes an autocommit engine over the same pool, so the lookup is one round trip.
    """

    def __init__(self, engine: Engine, site: SitePolicy,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 reader: Engine | None = None) -> None:
        self.engine = engine
        self.reader = reader or engine
        self.site = site
        self.clock = clock

    def create(self, partner: str, kind: str, user: str | None = None) -> IssuedKey:
        """Issue a credential for ``partner``; staff tokens need a ``user``, partner keys none."""
        if self.site.partner(partner) is None:
            raise CredentialError(f"partner {partner!r} is not in the site file; "
                                  f"partners are {', '.join(self.site.partner_ids())}")
        if kind not in KINDS:
            raise CredentialError("kind must be 'partner' or 'staff'")
        if kind == "staff" and (user is None or not _USER.match(user)):
            raise CredentialError("a staff token needs --user NAME (letters, digits, . _ @ -)")
        if kind == "partner" and user is not None:
            raise CredentialError("a partner key belongs to a partner system, not a user; "
                                  "drop --user or use --kind staff")
        key_id, secret = new_secret()
        info = KeyInfo(key_id, kind, partner, user, self.clock(), None, None)
        self._write(lambda c: c.execute(insert(api_credentials).values(
            key_id=key_id, kind=kind, partner=partner, user_name=user,
            secret_sha256=hash_secret(secret), created_at=info.created_at)))
        return IssuedKey(info, secret)

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a credential at once (idempotent); raise if the key id is unknown."""
        now = self.clock()
        self._write(lambda c: c.execute(update(api_credentials).where(
            api_credentials.c.key_id == key_id, api_credentials.c.revoked_at.is_(None)
        ).values(revoked_at=now)))
        return self.get(key_id)

    def rotate(self, key_id: str) -> IssuedKey:
        """Issue a new credential for the same partner, kind and user, and revoke the old one."""
        old = self.get(key_id)
        if old.revoked_at is not None:
            raise CredentialError(f"key {key_id} is revoked; create a new key instead")
        issued = self.create(old.partner, old.kind, old.user)
        now = self.clock()
        self._write(lambda c: c.execute(update(api_credentials).where(
            api_credentials.c.key_id == key_id).values(revoked_at=now,
                                                       replaced_by=issued.info.key_id)))
        return issued

    def get(self, key_id: str) -> KeyInfo:
        """Return one credential's listing; raise :class:`CredentialError` if unknown."""
        found = [k for k in self.list() if k.key_id == key_id]
        if not found:
            raise CredentialError(f"no key with id {key_id!r} (see 'leadhub keys list')")
        return found[0]

    def list(self) -> list[KeyInfo]:
        """Every credential, oldest first (never the secrets)."""
        c = api_credentials.c
        query = select(c.key_id, c.kind, c.partner, c.user_name, c.created_at, c.revoked_at,
                       c.replaced_by).order_by(c.created_at, c.key_id)
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError as exc:
            raise CredentialError("cannot read the credential table") from exc
        return [KeyInfo(r[0], r[1], r[2], r[3], _utc(r[4]),
                        _utc(r[5]) if r[5] else None, r[6]) for r in rows]

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller for an Authorization header; 401 unless valid and unrevoked."""
        secret = parse_bearer(authorization)
        match = _SECRET.match(secret)
        # Hash even for malformed secrets, so timing says nothing about the format.
        presented = hash_secret(secret)
        if match is None:
            raise Unauthorized("the credential is not valid", code="INVALID_CREDENTIAL")
        c = api_credentials.c
        try:
            with self.reader.connect() as connection:
                row = connection.execute(
                    select(c.kind, c.partner, c.user_name, c.secret_sha256, c.revoked_at)
                    .where(c.key_id == match["key_id"])
                ).first()
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the credential database cannot be read; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc
        stored = row[3] if row is not None else hash_secret("")
        if row is None or not hmac.compare_digest(presented, stored):
            raise Unauthorized("the credential is not valid", code="INVALID_CREDENTIAL")
        if row[4] is not None:
            raise Unauthorized("the credential was revoked", code="REVOKED_CREDENTIAL")
        partner = self.site.partner(row[1])
        if partner is None:
            raise Unauthorized("the credential's partner is no longer in the site",
                               code="INVALID_CREDENTIAL")
        return Principal(match["key_id"], row[0], partner, row[2])

    def _write(self, statement: Callable[[Any], Any]) -> None:
        try:
            with self.engine.begin() as connection:
                statement(connection)
        except SQLAlchemyError as exc:
            raise CredentialError("cannot write the credential table") from exc


def require_kind(principal: Principal, kind: Kind) -> Principal:
    """Return ``principal`` if it is of ``kind``; 403 otherwise (keys publish, tokens read)."""
    if principal.kind != kind:
        what = ("partner API keys may only publish events"
                if principal.kind == "partner" else "staff tokens may only read")
        raise Forbidden(f"{what}; use a {kind} credential for this endpoint",
                        code="WRONG_CREDENTIAL_KIND")
    return principal
