"""SQL tables of the API, in the view database under their own metadata.

``api_credentials`` holds partner API keys and staff tokens (only the SHA-256 of each secret);
``gateway_events`` remembers each (partner, event_id) the gateway accepted, so a retried
publish gets the same answer and is sent once. Neither is derived from Kafka: they are the
API's own operational state, not part of the replayable view.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table

api_metadata = MetaData()

api_credentials = Table(
    "api_credentials",
    api_metadata,
    Column("key_id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # "partner" | "staff"
    Column("partner", String(64), nullable=False),
    Column("user_name", String(128), nullable=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("replaced_by", String(32), nullable=True),
)
Index("ix_api_credentials_partner", api_credentials.c.partner)

gateway_events = Table(
    "gateway_events",
    api_metadata,
    Column("partner", String(64), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("body_sha256", String(64), nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
)
