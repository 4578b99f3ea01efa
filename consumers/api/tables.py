"""SQL tables of the API, in the view database under their own metadata.

``api_credentials`` holds partner API keys and staff tokens (only the SHA-256 of each secret);
``gateway_events`` remembers each (partner, event_id) the gateway accepted, so a retried
publish gets the same answer and is sent once. ``participant_links`` is the crosswalk: which
participant id the hub minted for a partner's local id, the local id kept only as a keyed
hash (HMAC-SHA-256 under the key in ``api_secrets``; see :mod:`consumers.api.crosswalk`).
None is derived from Kafka: they are the API's own operational state, not part of the
replayable view.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table

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

participant_links = Table(
    "participant_links",
    api_metadata,
    Column("partner", String(64), primary_key=True),
    # hex HMAC-SHA-256 of (partner, local id) under the crosswalk key; never the local id
    Column("local_id_hmac", String(64), primary_key=True),
    Column("participant_id", String(32), nullable=False),
    Column("event_id", String(36), nullable=False),  # the link's IdentifierLinked event
    Column("linked_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),  # Kafka acknowledged it
)

api_secrets = Table(
    "api_secrets",
    api_metadata,
    Column("name", String(64), primary_key=True),
    Column("secret_hex", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The staff console (consumers/console): staff users, their sign-in sessions, and which user
# recorded which event. Passwords only as argon2id hashes; session tokens only as SHA-256.
console_users = Table(
    "console_users",
    api_metadata,
    Column("user_name", String(128), primary_key=True),
    Column("partner", String(64), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("totp_secret", String(64), nullable=True),  # base32; None: no second factor
    Column("totp_last_step", BigInteger, nullable=True),  # last accepted step (no replay)
    Column("failures", Integer, nullable=False, default=0),
    Column("locked_at", DateTime(timezone=True), nullable=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The name CaseManagerAssigned rows give the user ("J. Rivera"); None: the user name.
    Column("display_name", String(128), nullable=True),
)

console_sessions = Table(
    "console_sessions",
    api_metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("session_id", String(32), nullable=False, unique=True),  # public id, in the audit
    Column("user_name", String(128), nullable=False),
    Column("purpose", String(64), nullable=True),  # chosen once, after sign-in
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
)
Index("ix_console_sessions_user", console_sessions.c.user_name)

event_authors = Table(
    "event_authors",
    api_metadata,
    Column("partner", String(64), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("user_name", String(128), nullable=False),
    Column("session_id", String(32), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),  # Kafka acknowledged it
)
