"""The root of leadhub's exception tree.

Every error leadhub raises on purpose derives from :class:`HubError`. Each layer has its own
subtree (``ContractError`` in ``schemas``, ``PolicyError`` in ``processors``, ``ServiceError`` in
``leadhub.services`` ...). Library errors are wrapped with ``raise ... from exc``.

Messages say what was wrong and what to do about it. They never contain personal data: name
fields, ids of events and partners, offsets — never a field's value.
"""

from __future__ import annotations


class HubError(Exception):
    """Root of every error leadhub raises on purpose."""
