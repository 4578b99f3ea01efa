"""Errors of the consumer side (SQL view, live projector, query)."""

from __future__ import annotations

from schemas.errors import HubError


class ConsumerError(HubError):
    """Root of the errors raised by ``consumers``."""


class ViewStoreError(ConsumerError):
    """The SQL view store cannot be opened, read or written."""


class ProjectionVersionMismatch(ViewStoreError):
    """The view was built by another projection version: drop it and rebuild by replay."""
