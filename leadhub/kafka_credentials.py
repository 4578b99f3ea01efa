"""Which principal a hub process connects as, and where the local broker keeps their passwords.

``LEADHUB_KAFKA_USERNAME`` / ``LEADHUB_KAFKA_PASSWORD`` name the principal explicitly (a
deployment sets them per process; a partner sets its own). Without them, a hub process takes
its role's principal (``leadhub-validator``, ...) from the credentials directory that
``leadhub services start`` fills for the local broker (``LEADHUB_KAFKA_CREDENTIALS_DIR``,
default ``<state dir>/kafka/credentials``: one file per principal, mode 0600, holding the
password). With neither, the client talks plaintext, for an unsecured external broker.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from leadhub.kafka_access import principal
from leadhub.services import PrerequisiteMissing
from leadhub.settings import Settings
from schemas.kafka_connection import KafkaConnection


class CredentialStore:
    """Passwords of the local broker's principals, one 0600 file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def password(self, user: str) -> str | None:
        """The stored password of ``user``, or None if there is none."""
        path = self.directory / user
        return path.read_text().strip() if path.exists() else None

    def save(self, user: str, password: str) -> None:
        """Store ``user``'s password readable by this account only."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        path = self.directory / user
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")

    def connection(self, bootstrap: str, user: str) -> KafkaConnection | None:
        """A connection as ``user`` if its password is stored here."""
        password = self.password(user)
        return None if password is None else KafkaConnection(bootstrap, user, password)


def new_password() -> str:
    """A random password for a SCRAM credential (192 bits)."""
    return secrets.token_urlsafe(24)


def kafka_connection(settings: Settings, role: str) -> KafkaConnection:
    """How a process of ``role`` (validator, projector, api, audit, admin) reaches the broker.

    Raises PrerequisiteMissing if only one of the username and the password is set.
    """
    bootstrap = settings.effective_kafka_bootstrap
    if settings.kafka_username or settings.kafka_password:
        return explicit_connection(settings)
    stored = CredentialStore(settings.kafka_credentials_dir).connection(bootstrap,
                                                                        principal(role))
    return stored or KafkaConnection(bootstrap)


def explicit_connection(settings: Settings) -> KafkaConnection:
    """The principal named by ``LEADHUB_KAFKA_USERNAME``/``LEADHUB_KAFKA_PASSWORD``.

    Raises PrerequisiteMissing if either is missing.
    """
    if not settings.kafka_username or not settings.kafka_password:
        raise PrerequisiteMissing(
            "set both LEADHUB_KAFKA_USERNAME and LEADHUB_KAFKA_PASSWORD (a partner gets them "
            "from `leadhub partners credentials create PARTNER`)")
    return KafkaConnection(settings.effective_kafka_bootstrap, settings.kafka_username,
                           settings.kafka_password)
