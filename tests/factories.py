"""What tests build again and again: the project's paths and example site, participant ids,
events, a partner's publish.

Participant ids are in the hub's format, ``p-`` and 16 lowercase hex digits.
``participant_id(name)`` is deterministic, so a test can name its people (``participant_id("A")``)
and find them again in what the hub returns; ``new_participant_id()`` is random, for tests that
share a broker or database with other runs.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from consumers.store import ViewStore
from processors.site import SitePolicy, load_site
from producers.sdk import PartnerPublisher
from schemas.catalog import Catalog, load_catalog
from schemas.event import Event, mint_participant_id
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

#: The project's root directory (where pyproject.toml is).
ROOT = Path(__file__).resolve().parent.parent
#: The example site file every test that needs a site uses.
SITE_FILE = ROOT / "config" / "site.example.yaml"
#: The example site, loaded once.
SITE: SitePolicy = load_site(SITE_FILE)


def participant_id(name: str | int) -> str:
    """The participant id named ``name``: ``p-`` and the first 16 hex digits of the SHA-256 of
    ``str(name)``: the same name always gives the same id (and two names the same id only by
    a 2**-64 chance)."""
    return "p-" + hashlib.sha256(str(name).encode("utf-8")).hexdigest()[:16]


def new_participant_id() -> str:
    """A fresh random participant id, as the hub mints them."""
    return mint_participant_id()


def make_event(type_: str, participant: str, at: datetime, **payload: Any) -> Event:
    """An event of ``type_`` about ``participant``, occurred ``at``, with a fresh version-4 id
    and no source (the hub stamps it)."""
    return Event(event_id=str(uuid.uuid4()), type=type_, participant_id=participant,
                 occurred_at=at, payload=payload)


@functools.cache
def catalog() -> Catalog:
    """The project's schema catalog, loaded once per test session."""
    return load_catalog()


def publish_as(kafka: KafkaConnection, topics: TopicNames, partner: str, *events: Event) -> None:
    """Publish ``events`` to ``partner``'s inbound topic through the partner SDK; returns once
    the broker acknowledged them all."""
    with PartnerPublisher(partner, kafka, catalog=catalog(), topics=topics) as publisher:
        publisher.publish_many(events)


def view_of_version(store: ViewStore, version: str, *statements: str) -> ViewStore:
    """Turn ``store``'s view into one of projection ``version`` (running ``statements`` first),
    close it, and return a new ``ViewStore`` on it started twice, as two processes starting one
    after the other would: the first upgrades the view in place, the second finds it current."""
    with store.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
        connection.execute(text("UPDATE view_meta SET value = :v WHERE key = 'projection_version'"),
                           {"v": version})
    store.close()
    upgraded = ViewStore(store.engine.url.render_as_string(hide_password=False))
    upgraded.create_schema()
    upgraded.create_schema()
    return upgraded


def listed_pairs(engine: Engine) -> set[tuple[str, str]]:
    """The view's ``recipient_participants``, asserted to be exactly the (recipient, participant)
    pairs its rows have."""
    with engine.connect() as connection:
        listed = {(str(r), str(p)) for r, p in connection.execute(text(
            "SELECT recipient, participant_id FROM recipient_participants"))}
        from_rows = {(str(r), str(p)) for r, p in connection.execute(text(
            "SELECT DISTINCT recipient, participant_id FROM view_rows"))}
    assert listed == from_rows, (sorted(listed - from_rows)[:5], sorted(from_rows - listed)[:5])
    return listed
