"""Errors of the HTTP API, each carrying its HTTP status and a stable machine-readable code.

Every error answers with the same JSON shape, ``{"error": {"code", "message"}}`` (plus
``field_path`` when one field is at fault). Messages never contain personal data or field
values: they name fields, ids of keys and partners, and what to do.
"""

from __future__ import annotations

from typing import Any

from consumers.errors import ConsumerError


class ApiError(ConsumerError):
    """Root of the API's errors; ``status`` is the HTTP status, ``code`` a stable code."""

    status: int = 400
    default_code: str = "BAD_REQUEST"

    def __init__(self, message: str, *, code: str | None = None,
                 field_path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field_path = field_path

    def body(self) -> dict[str, Any]:
        """The JSON response body for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field_path is not None:
            error["field_path"] = self.field_path
        return {"error": error}


class BadRequest(ApiError):
    """The request is malformed: a bad parameter, header, cursor or event (400)."""


class Unauthorized(ApiError):
    """No credential, an unknown one, or a revoked one (401)."""

    status = 401
    default_code = "UNAUTHENTICATED"


class Forbidden(ApiError):
    """The credential is valid but may not do this (403)."""

    status = 403
    default_code = "FORBIDDEN"


class NotFound(ApiError):
    """Nothing the caller may see has this id (404) — identical whether it exists or not."""

    status = 404
    default_code = "NOT_FOUND"


class Conflict(ApiError):
    """An event id was reused for a different event (409)."""

    status = 409
    default_code = "CONFLICT"


class PayloadTooLarge(ApiError):
    """The body (or the batch) is larger than the configured limit (413)."""

    status = 413
    default_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    """The body's content type is not one the endpoint accepts (415)."""

    status = 415
    default_code = "UNSUPPORTED_MEDIA_TYPE"


class ServiceUnavailable(ApiError):
    """Kafka or the view database cannot be reached; retry later (503)."""

    status = 503
    default_code = "UNAVAILABLE"


class CredentialError(ApiError):
    """A key management command failed (unknown key id, bad partner, database error)."""
