"""The participant crosswalk: the hub's participant id for a partner's own local id.

A partner knows a person by its own local id (a booking number, a client id). ``POST
/v1/participants`` answers with the hub's participant id for it: one minted at random
(:func:`schemas.event.mint_participant_id`) the first time, the same one every later time for
that partner, and records the link as an ``IdentifierLinked`` event published like any other
event of the partner (:class:`consumers.api.ingest.Gateway`: the validator stamps the source).
``GET /v1/identifiers/{local_id}`` answers only from the caller's own links.

**Local ids are per partner.** Two partners' booking and client numbers are separate
namespaces ("BK-1" at the police and "BK-1" at the shelter are unrelated people), so each link
belongs to one partner, and two partners linking the same local id get two participant ids.
The crosswalk never merges people across partners and never tells one partner another's
links; the lookup's 404 is the same for "not linked" and "linked by someone else", since the
lookup is keyed by the caller's partner and cannot find another's link at all.

**Only a keyed hash of the local id is stored.** A link's row holds HMAC-SHA-256 over the
partner id and the local id, under a 32-byte key made from :mod:`secrets` on first use and
kept in the same database (``api_secrets``). A plain SHA-256 of partner and local id would not
do: local ids are short and often sequential, so hashing every candidate booking number
reverses it in seconds. The keyed hash makes the table worthless without the key. The key
lives beside the table rather than in a file so that every API replica and a restored backup
share it with no configuration; it guards the table when the table leaks alone (an export, a
copy, a query result), not a copy of the whole database. The local id itself is never stored,
logged or put in an error message; it travels only in the ``IdentifierLinked`` event, to the
recipients the site's policy allows.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from consumers.api.errors import Forbidden, ServiceUnavailable
from consumers.api.ingest import EMITTER_NOT_ALLOWED, Gateway
from consumers.api.tables import api_secrets, participant_links
from processors.site import Partner
from schemas.catalog import Catalog
from schemas.event import Event, mint_participant_id

#: The event type that records a link.
LINK_TYPE = "IdentifierLinked"
#: What a local id may be: 1-128 letters, digits and ``. _ : -``, starting with a letter or a
#: digit. It travels in a URL path, so it holds nothing that needs escaping there; a partner
#: whose ids hold other characters maps them (e.g. ``/`` to ``-``) the same way every time.
LOCAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: The name of the crosswalk's HMAC key in ``api_secrets``.
KEY_NAME = "crosswalk-hmac-sha256"


@dataclass(frozen=True, slots=True)
class Link:
    """One partner's link: the participant id, the ``IdentifierLinked`` event that records it
    (its id and instant are fixed when the link is made, so a retried publish is the same
    event), and whether Kafka has acknowledged that event."""

    participant_id: str
    event_id: str
    linked_at: datetime
    published: bool


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("the crosswalk database cannot be reached; retry later",
                              code="DATABASE_UNAVAILABLE")


class Crosswalk:
    """SQL adapter of the crosswalk (``participant_links``). Thread-safe: one short
    transaction per call. Raises :class:`ServiceUnavailable` (``DATABASE_UNAVAILABLE``) when the
    database cannot be used.

    ``reader`` (default ``engine``) serves the lookups; ``mint`` makes new participant ids.
    """

    def __init__(self, engine: Engine,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 reader: Engine | None = None,
                 mint: Callable[[], str] = mint_participant_id) -> None:
        self.engine = engine
        self.reader = reader or engine
        self.clock = clock
        self.mint = mint
        self._key: bytes | None = None

    def key(self) -> bytes:
        """The deployment's HMAC key: read from ``api_secrets``, made there on first use."""
        if self._key is not None:
            return self._key
        column = api_secrets.c.secret_hex
        query = select(column).where(api_secrets.c.name == KEY_NAME)
        try:
            with self.engine.connect() as connection:
                stored = connection.execute(query).scalar_one_or_none()
            if stored is None:
                try:
                    with self.engine.begin() as connection:
                        connection.execute(insert(api_secrets).values(
                            name=KEY_NAME, secret_hex=secrets.token_hex(32),
                            created_at=_utc(self.clock())))
                except IntegrityError:
                    pass  # another process made it first: use theirs
                with self.engine.connect() as connection:
                    stored = connection.execute(query).scalar_one()
        except SQLAlchemyError as exc:
            raise _unavailable() from exc
        self._key = bytes.fromhex(str(stored))
        return self._key

    def digest(self, partner: str, local_id: str) -> str:
        """Hex HMAC-SHA-256 of ``partner`` and ``local_id`` under :meth:`key` (what is stored).

        The partner is part of the message, so the same local id of two partners gives
        unrelated digests.
        """
        message = partner.encode("utf-8") + b"\x00" + local_id.encode("utf-8")
        return hmac.new(self.key(), message, hashlib.sha256).hexdigest()

    def find(self, partner: str, local_id: str) -> Link | None:
        """``partner``'s link of ``local_id``, or None; never another partner's."""
        c = participant_links.c
        query = select(c.participant_id, c.event_id, c.linked_at, c.published_at).where(
            c.partner == partner, c.local_id_hmac == self.digest(partner, local_id))
        try:
            with self.reader.connect() as connection:
                row = connection.execute(query).first()
        except SQLAlchemyError as exc:
            raise _unavailable() from exc
        if row is None:
            return None
        return Link(str(row[0]), str(row[1]), _utc(row[2]), row[3] is not None)

    def link(self, partner: str, local_id: str) -> Link:
        """``partner``'s link of ``local_id``, made now (a new participant id and a new event
        id) if there is none. Two concurrent calls get the same link."""
        found = self.find(partner, local_id)
        if found is not None:
            return found
        made = Link(self.mint(), str(uuid.uuid4()), _utc(self.clock()), False)
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(participant_links).values(
                    partner=partner, local_id_hmac=self.digest(partner, local_id),
                    participant_id=made.participant_id, event_id=made.event_id,
                    linked_at=made.linked_at, published_at=None))
        except IntegrityError:
            raced = self.find(partner, local_id)
            if raced is None:  # pragma: no cover - the row that collided cannot vanish
                raise ServiceUnavailable("the crosswalk changed under the request; retry",
                                         code="DATABASE_UNAVAILABLE") from None
            return raced
        except SQLAlchemyError as exc:
            raise _unavailable() from exc
        return made

    def confirm(self, partner: str, local_id: str) -> bool:
        """Mark the link's event as acknowledged by Kafka; True if this call did (the first)."""
        c = participant_links.c
        statement = update(participant_links).where(
            c.partner == partner, c.local_id_hmac == self.digest(partner, local_id),
            c.published_at.is_(None)).values(published_at=_utc(self.clock()))
        try:
            with self.engine.begin() as connection:
                return connection.execute(statement).rowcount == 1
        except SQLAlchemyError as exc:
            raise _unavailable() from exc


def link_event(partner: str, local_id: str, link: Link) -> Event:
    """The ``IdentifierLinked`` event recording ``link`` (source left empty: the hub stamps it)."""
    return Event(event_id=link.event_id, type=LINK_TYPE, participant_id=link.participant_id,
                 occurred_at=link.linked_at, payload={"partner": partner, "local_id": local_id})


def link_participant(crosswalk: Crosswalk, gateway: Gateway, catalog: Catalog,
                     partner: Partner, local_id: str) -> tuple[str, bool]:
    """Return ``partner``'s participant id for ``local_id`` and whether this call made the
    link: True the first time its ``IdentifierLinked`` is acknowledged by Kafka, False on every
    later call.

    The link is stored before its event is published; if publishing fails (503) the link keeps
    its participant id, and the next call publishes the same event again (same event id and
    content, so the gateway and the projector take it once). Raises :class:`Forbidden`
    (``EMITTER_NOT_ALLOWED``) if the partner's role may not emit ``IdentifierLinked``, and
    :class:`ServiceUnavailable` when the database or Kafka does not answer.
    """
    if not catalog.may_emit(partner.role, LINK_TYPE):
        raise Forbidden(f"role {partner.role} may not emit {LINK_TYPE}",
                        code=EMITTER_NOT_ALLOWED)
    link = crosswalk.link(partner.id, local_id)
    if link.published:
        return link.participant_id, False
    gateway.submit(partner, link_event(partner.id, local_id, link))
    return link.participant_id, crosswalk.confirm(partner.id, local_id)
