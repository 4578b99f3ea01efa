"""Local services for development and tests: a Kafka broker from Maven jars, PostgreSQL."""

from __future__ import annotations

from schemas.errors import HubError


class ServiceError(HubError):
    """A local service could not be set up, started, stopped or reached."""


class PrerequisiteMissing(ServiceError):
    """Something must be installed or configured first (java, mvn, PostgreSQL, a credential).

    Nothing is broken: once the message's advice is followed, the same command works.
    """
