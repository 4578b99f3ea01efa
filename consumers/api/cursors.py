"""Opaque, stable page cursors: base64url of a small JSON object naming where a page ends.

A cursor names a position in the caller's own rows (a participant id, or an
(occurred_at, event_id) key), never a count or an offset, so a page boundary stays put while
rows arrive. A cursor made for one listing is rejected by another (400 ``INVALID_CURSOR``).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from consumers.api.caseload import parse_instant
from consumers.api.errors import BadRequest
from processors.timefmt import format_instant


def _invalid() -> BadRequest:
    return BadRequest("the cursor is not one this listing issued; start again without it",
                      code="INVALID_CURSOR", field_path="cursor")


def encode_cursor(listing: str, position: list[Any]) -> str:
    """Encode ``position`` for ``listing`` as an opaque URL-safe string."""
    raw = json.dumps({"l": listing, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(listing: str, cursor: str, arity: int) -> list[Any]:
    """Decode a cursor of ``listing`` holding ``arity`` strings; 400 if it is anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        obj = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError, RecursionError) as exc:
        raise _invalid() from exc
    if not isinstance(obj, dict) or obj.get("l") != listing:
        raise _invalid()
    position = obj.get("p")
    if (not isinstance(position, list) or len(position) != arity
            or not all(isinstance(p, str) and "\x00" not in p for p in position)):
        raise _invalid()
    return position


def time_key_cursor(listing: str, occurred_at: str, event_id: str) -> str:
    """A cursor after the row (occurred_at, event_id)."""
    return encode_cursor(listing, [occurred_at, event_id])


def decode_time_key(listing: str, cursor: str) -> tuple[datetime, str]:
    """Invert :func:`time_key_cursor`; 400 if the cursor is not one."""
    occurred_at, event_id = decode_cursor(listing, cursor, 2)
    try:
        return parse_instant(occurred_at), event_id
    except (ValueError, OverflowError) as exc:
        raise _invalid() from exc


__all__ = ["decode_cursor", "decode_time_key", "encode_cursor", "format_instant",
           "time_key_cursor"]
