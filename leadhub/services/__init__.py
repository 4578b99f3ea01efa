"""Local services for development and tests: a Kafka broker from Maven jars, PostgreSQL."""

from __future__ import annotations

from schemas.errors import HubError


class ServiceError(HubError):
    """A local service could not be set up, started, stopped or reached.

    ``exit_code`` is 2 when something must be installed first (java, mvn, PostgreSQL), else 1.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
