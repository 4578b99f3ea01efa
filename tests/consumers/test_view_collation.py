"""The projection's identifier columns compare byte for byte on PostgreSQL too (``COLLATE "C"``,
decision 0011), and so do the columns of the ``view_rows`` view over them (decision 0013)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

import consumers.projection_store  # noqa: F401  (its tables)
from consumers.store import RowChange, ViewStore

pytestmark = pytest.mark.integration

#: Every identifier column of the projection's tables, with its length.
IDENTIFIERS = {
    ("shared_rows", "participant_id"): 64, ("shared_rows", "event_id"): 64,
    ("shared_rows", "type"): 64, ("shared_rows", "source_partner"): 64,
    ("view_recipients", "recipient"): 64,
    ("indexed_rows", "recipient"): 64, ("indexed_rows", "type"): 64,
    ("indexed_rows", "event_id"): 64, ("indexed_rows", "participant_id"): 64,
    ("view_rows", "recipient"): 64, ("view_rows", "event_id"): 64,
    ("view_rows", "participant_id"): 64, ("view_rows", "type"): 64,
    ("view_rows", "source_partner"): 64,
    ("recipient_participants", "recipient"): 64,
    ("recipient_participants", "participant_id"): 64,
    ("participant_heads", "participant_id"): 64,
    ("participant_events", "participant_id"): 64, ("participant_events", "event_id"): 64,
    ("tracking", "topic"): 255,
}


def _collations(engine: Engine) -> dict[tuple[str, str], str | None]:
    """The collation of every column of :data:`IDENTIFIERS` (PostgreSQL's catalog)."""
    with engine.connect() as connection:
        found = connection.execute(text(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()")).all()
    return {(table, name): collation for table, name, collation in found
            if (table, name) in IDENTIFIERS}


def _new_view(database_url: str) -> ViewStore:
    """A view with the projector's tables too (importing ``consumers.projection_store``
    registered them with the view's metadata)."""
    store = ViewStore(database_url)
    store.create_schema()
    return store


def _row(event_id: str, participant_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "ContactLogged", "participant_id": participant_id,
            "occurred_at": "2026-01-02T03:04:05Z", "source_partner": "casemgmt", "fields": {},
            "categories": ["CONTACT"], "consent_ids": [], "notice": None}


def test_a_new_view_compares_its_identifiers_byte_for_byte(database_url: str) -> None:
    store = _new_view(database_url)
    try:
        if store.engine.dialect.name != "postgresql":
            pytest.skip("SQLite compares text byte for byte (BINARY) whatever the column says")
        assert _collations(store.engine) == dict.fromkeys(IDENTIFIERS, "C")
    finally:
        store.close()


def test_the_view_orders_participants_byte_for_byte(database_url: str) -> None:
    store = _new_view(database_url)
    store.apply([RowChange("r", "b", _row("b", "P-b")), RowChange("r", "a", _row("a", "p-a")),
                 RowChange("r", "c", _row("c", "P-a"))], {})
    try:
        with store.engine.connect() as connection:
            ordered = connection.execute(text(
                "SELECT participant_id FROM view_rows ORDER BY participant_id")).scalars().all()
        assert ordered == ["P-a", "P-b", "p-a"]
    finally:
        store.close()
