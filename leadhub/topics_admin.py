"""Create the hub's topics and its principals' ACLs, idempotently, all topics with the same
partition count (needs the admin principal on a secured broker)."""

from __future__ import annotations

import contextlib

from kafka.errors import KafkaError, TopicAlreadyExistsError

from leadhub.kafka_access import hub_grants
from leadhub.kafka_admin import admin_client, apply_grants, revoke_prefix
from leadhub.services import ServiceError
from processors.site import SitePolicy
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames


def hub_topic_names(topics: TopicNames, site: SitePolicy) -> list[str]:
    """Every topic of the hub: one inbound per partner, then the shared ones."""
    return [
        *(topics.inbound(partner_id) for partner_id in site.partner_ids()),
        topics.events,
        topics.dlq,
        topics.audit_access,
        topics.audit_checkpoints,
    ]


def create_topics(kafka: KafkaConnection, topics: TopicNames, site: SitePolicy,
                  partitions: int) -> list[str]:
    """Create the missing topics; return the names created (existing ones are left alone).

    On a secured broker (``kafka`` has a principal) the hub principals' ACLs for these topics
    are created too (:func:`leadhub.kafka_access.hub_grants`).

    Kafka is the system of record, so every topic keeps its records forever (retention -1).

    Raises ServiceError if an existing topic has another partition count: keys would then map
    to other partitions and per-participant ordering would break.
    """
    names = hub_topic_names(topics, site)
    admin = admin_client(kafka, "leadhub-topics")
    try:
        existing = set(admin.list_topics())
        wanted = {
            name: {"num_partitions": partitions, "replication_factor": 1,
                   "configs": {"retention.ms": "-1", "retention.bytes": "-1"}}
            for name in names if name not in existing
        }
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted, wait_for_metadata=True)
        described = admin.describe_topics([n for n in names if n in existing])
        for topic in described:
            count = len(topic.get("partitions", []))
            if count and count != partitions:
                raise ServiceError(
                    f"topic {topic.get('name')} has {count} partitions, "
                    f"the hub needs {partitions} everywhere (LEADHUB_PARTITIONS)"
                )
    except KafkaError as exc:
        raise ServiceError(f"creating topics failed: {type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()
    if kafka.secured:
        apply_grants(kafka, hub_grants(topics))
    return sorted(wanted)


def delete_prefix(kafka: KafkaConnection, prefix: str) -> None:
    """Delete every topic, consumer group and ACL whose name starts with ``prefix``.

    For throwaway prefixes (a test's, a benchmark's); never call it with a deployment's prefix:
    the log is the system of record. Raises ServiceError if Kafka cannot be reached or refuses.
    """
    if not prefix:
        raise ServiceError("refusing to delete every topic: the prefix is empty")
    admin = admin_client(kafka, "leadhub-cleanup")
    try:
        doomed = [t for t in admin.list_topics() if t.startswith(prefix)]
        if doomed:
            admin.delete_topics(doomed)
        groups = [g["group_id"] for g in admin.list_groups()
                  if str(g["group_id"]).startswith(prefix)]
        if groups:
            admin.delete_groups(groups)
    except KafkaError as exc:
        raise ServiceError(f"deleting {prefix}* failed: {type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()
    if kafka.secured:
        revoke_prefix(kafka, prefix)

