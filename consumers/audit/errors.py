"""Errors of the audit layer: one ``AuditError`` subtree under the consumers' root."""

from __future__ import annotations

from consumers.errors import ConsumerError


class AuditError(ConsumerError):
    """Root of the errors raised by ``consumers.audit``."""


class ReplayError(AuditError):
    """``lead.events`` could not be replayed (unreachable broker, undecodable event)."""


class CheckpointError(AuditError):
    """Signing keys or checkpoints are missing, malformed or do not verify."""


class BundleError(AuditError):
    """An audit bundle cannot be exported or read (not: a bundle that fails verification)."""


class SetupError(AuditError):
    """Something the command needs is missing (key, topic, checkpoint): fix it and rerun."""


class EmptyWindowError(AuditError):
    """A time window of ``lead.events`` holds nothing to work on (``audit export``).

    The message says when the log's records were received, so the caller can pick a window
    that holds some.
    """
