"""Names of the hub's Kafka topics (docs/architecture.md "Topics"), under an optional prefix.

The prefix lets several hubs, or several tests, share one broker without seeing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARTNER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class TopicNames:
    """The topic layout of one hub instance."""

    prefix: str = ""

    def inbound(self, partner_id: str) -> str:
        """``lead.in.<partner_id>``: the one topic that partner may write."""
        if not _PARTNER_ID.match(partner_id):
            raise ValueError(
                "partner ids are 1-63 characters of a-z, 0-9, '_' or '-', starting with a "
                "letter or digit"
            )
        return f"{self.prefix}lead.in.{partner_id}"

    @property
    def inbound_pattern(self) -> str:
        """A regular expression matching every inbound topic of this hub."""
        return "^" + re.escape(f"{self.prefix}lead.in.") + r"[a-z0-9][a-z0-9_-]*$"

    def partner_of(self, topic: str) -> str | None:
        """The partner id an inbound topic belongs to, or None for any other topic."""
        head = f"{self.prefix}lead.in."
        if not topic.startswith(head):
            return None
        partner = topic[len(head):]
        return partner if _PARTNER_ID.match(partner) else None

    @property
    def events(self) -> str:
        return f"{self.prefix}lead.events"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}lead.dlq"

    @property
    def audit_access(self) -> str:
        return f"{self.prefix}lead.audit.access"

    @property
    def audit_checkpoints(self) -> str:
        return f"{self.prefix}lead.audit.checkpoints"
