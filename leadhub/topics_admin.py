"""Create the hub's topics on the broker, idempotently, all with the same partition count."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from leadhub.services import ServiceError
from processors.site import SitePolicy
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


def create_topics(bootstrap: str, topics: TopicNames, site: SitePolicy,
                  partitions: int) -> list[str]:
    """Create the missing topics; return the names created (existing ones are left alone).

    Kafka is the system of record, so every topic keeps its records forever (retention -1).

    Raises ServiceError if an existing topic has another partition count: keys would then map
    to other partitions and per-participant ordering would break.
    """
    names = hub_topic_names(topics, site)
    admin = _admin(bootstrap, "leadhub-topics")
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
        return sorted(wanted)
    except KafkaError as exc:
        raise ServiceError(f"creating topics failed: {type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()


def delete_prefix(bootstrap: str, prefix: str) -> None:
    """Delete every topic and consumer group whose name starts with ``prefix``.

    For throwaway prefixes (a test's, a benchmark's); never call it with a deployment's prefix:
    the log is the system of record. Raises ServiceError if Kafka cannot be reached or refuses.
    """
    if not prefix:
        raise ServiceError("refusing to delete every topic: the prefix is empty")
    admin = _admin(bootstrap, "leadhub-cleanup")
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


def _admin(bootstrap: str, client_id: str) -> KafkaAdminClient:
    """An admin client for ``bootstrap``; ServiceError if Kafka cannot be reached."""
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id,
                                bootstrap_timeout_ms=10000)
    except (KafkaError, OSError) as exc:
        raise ServiceError(f"cannot reach Kafka at {bootstrap}: {type(exc).__name__}") from exc
