"""Participant ids in the hub's format for tests: ``p-`` and 16 lowercase hex digits.

``participant_id(name)`` is deterministic, so a test can name its people (``participant_id("A")``)
and find them again in what the hub returns; ``new_participant_id()`` is random, for tests that
share a broker or database with other runs.
"""

from __future__ import annotations

import hashlib

from schemas.event import mint_participant_id


def participant_id(name: str | int) -> str:
    """The participant id named ``name``: ``p-`` and the first 16 hex digits of the SHA-256 of
    ``str(name)``: the same name always gives the same id (and two names the same id only by
    a 2**-64 chance)."""
    return "p-" + hashlib.sha256(str(name).encode("utf-8")).hexdigest()[:16]


def new_participant_id() -> str:
    """A fresh random participant id, as the hub mints them."""
    return mint_participant_id()
