"""Who may do what on the broker: the hub's principals and their ACLs, as plain data.

The broker authenticates every client with SASL/SCRAM-SHA-512 and authorizes it with Kafka's
``StandardAuthorizer`` (no ACL, no access). This module says which grants each principal needs,
least rights first (docs/architecture.md "Partner isolation on Kafka"):

* a partner (principal = its partner id) may write and describe its own ``lead.in.<partner>``
  and nothing else: it cannot read any topic, nor write another partner's;
* ``leadhub-validator`` reads the inbound topics, writes ``lead.events`` and ``lead.dlq``
  transactionally, in its own group;
* ``leadhub-projector`` reads ``lead.events`` and writes ``lead.dlq``, in its own group;
* ``leadhub-api`` writes the inbound topics (the HTTP gateway publishes for partners) and
  ``lead.audit.access``;
* ``leadhub-audit`` reads every hub topic, writes ``lead.audit.checkpoints`` and may read the
  hub groups' committed offsets (reconcile);
* ``leadhub-admin`` is the broker's super user: topics, credentials and ACLs.

Pure: no client here; :mod:`leadhub.kafka_admin` applies the grants.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import TopicNames

#: The hub's own processes, each with its principal ``leadhub-<role>``.
HUB_ROLES = ("validator", "projector", "api", "audit")
ADMIN_ROLE = "admin"
PRINCIPAL_PREFIX = "leadhub-"

READ = ("READ", "DESCRIBE")
WRITE = ("WRITE", "DESCRIBE")


@dataclass(frozen=True)
class Grant:
    """ALLOW ``operations`` on a resource to ``User:<user>`` from any host."""

    user: str
    resource: str  # TOPIC, GROUP, TRANSACTIONAL_ID
    name: str
    prefixed: bool
    operations: tuple[str, ...]


def principal(role: str) -> str:
    """The SCRAM user name of a hub role (``leadhub-validator``, ..., ``leadhub-admin``)."""
    if role not in (*HUB_ROLES, ADMIN_ROLE):
        raise ValueError(f"unknown hub role {role!r}")
    return f"{PRINCIPAL_PREFIX}{role}"


def is_hub_principal(user: str) -> bool:
    """True for the names reserved to the hub's own principals."""
    return user.startswith(PRINCIPAL_PREFIX)


def partner_grants(topics: TopicNames, partner_id: str) -> list[Grant]:
    """A partner writes (and describes) its own inbound topic: nothing more."""
    return [Grant(partner_id, "TOPIC", topics.inbound(partner_id), False, WRITE)]


def hub_grants(topics: TopicNames) -> list[Grant]:
    """Every grant of the hub's own principals for the topics under ``topics.prefix``."""
    p = topics.prefix
    inbound = f"{p}lead.in."
    validator, projector = f"{p}leadhub-validator", f"{p}leadhub-projector"
    grants: list[tuple[str, str, str, bool, tuple[str, ...]]] = [
        ("validator", "TOPIC", inbound, True, READ),
        ("validator", "TOPIC", topics.events, False, WRITE),
        ("validator", "TOPIC", topics.dlq, False, WRITE),
        ("validator", "GROUP", validator, False, READ),
        ("validator", "TRANSACTIONAL_ID", validator, True, WRITE),
        ("projector", "TOPIC", topics.events, False, READ),
        ("projector", "TOPIC", topics.dlq, False, WRITE),
        ("projector", "GROUP", projector, False, READ),
        ("api", "TOPIC", inbound, True, WRITE),
        ("api", "TOPIC", topics.audit_access, False, WRITE),
        ("audit", "TOPIC", f"{p}lead.", True, READ),
        ("audit", "TOPIC", topics.audit_checkpoints, False, WRITE),
        ("audit", "GROUP", validator, False, ("DESCRIBE",)),
        ("audit", "GROUP", projector, False, ("DESCRIBE",)),
    ]
    return [Grant(principal(role), resource, name, prefixed, ops)
            for role, resource, name, prefixed, ops in grants]
