"""Instants and payload values as JSON: one fixed, lossless format for the policy core.

Instants are tz-aware UTC, written ISO 8601 with a ``Z`` (``2025-03-01T09:30:00Z``, with
``.ffffff`` only when there are microseconds). Payload values keep their Python types through
a JSON round trip: a datetime becomes ``{"$datetime": "..."}``, a date ``{"$date": "..."}``,
bytes ``{"$bytes": "<base64>"}``; a mapping whose only key starts with ``$`` is wrapped as
``{"$map": {...}}`` so it can never be mistaken for a tag.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from processors.errors import PolicyError


@lru_cache(maxsize=65536)
def format_instant(instant: datetime) -> str:
    """Return ``instant`` (tz-aware) as ISO 8601 UTC with a ``Z`` suffix.

    Raises :class:`PolicyError` for a naive datetime: the core never guesses a timezone.
    """
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise PolicyError("naive datetime: leadhub works in tz-aware UTC only")
    utc = instant.astimezone(UTC)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant with an offset or ``Z``; return it as tz-aware UTC.

    Raises :class:`PolicyError` if the text is not an instant or has no offset.
    """
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise PolicyError(f"not an ISO 8601 instant: {text!r}") from exc
    if parsed.tzinfo is None:
        raise PolicyError(f"instant without a timezone: {text!r}; add Z or an offset")
    return parsed.astimezone(UTC)


#: The types a payload value already has in JSON, tested by exact type first: most values are
#: these, and a set lookup is cheaper than ``isinstance`` against a union (subclasses, such as
#: an enum of ``str``, take the ``isinstance`` path after it).
_JSON_NATIVE = frozenset({str, int, float, bool, type(None)})


def value_to_json(value: Any) -> Any:
    """Return ``value`` (a decoded payload value) as JSON-native data, losslessly."""
    if type(value) in _JSON_NATIVE or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {"$datetime": format_instant(value)}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        encoded = {str(key): value_to_json(item) for key, item in value.items()}
        if len(encoded) == 1 and next(iter(encoded)).startswith("$"):
            return {"$map": encoded}
        return encoded
    if isinstance(value, list | tuple):
        return [value_to_json(item) for item in value]
    raise PolicyError(f"payload value of type {type(value).__name__} cannot be stored as JSON")


def value_from_json(value: Any) -> Any:
    """Invert :func:`value_to_json`."""
    if isinstance(value, list):
        return [value_from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key == "$datetime":
            return parse_instant(inner)
        if key == "$date":
            return date.fromisoformat(inner)
        if key == "$bytes":
            return base64.b64decode(inner)
        if key == "$map":
            return {k: value_from_json(v) for k, v in inner.items()}
    return {key: value_from_json(item) for key, item in value.items()}


def value_to_view_json(value: Any) -> Any:
    """Return ``value`` as plain JSON for a reader: instants as ISO ``Z`` strings, bytes hex."""
    if type(value) in _JSON_NATIVE or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(key): value_to_view_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [value_to_view_json(item) for item in value]
    return str(value)
