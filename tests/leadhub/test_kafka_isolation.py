"""Partner isolation on the real broker: SASL/SCRAM principals and the ACLs the hub grants.

The broker, not the documentation, keeps a partner to its own inbound topic: each check below
asks the broker and expects its refusal (docs/architecture.md "Partner isolation on Kafka").
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from leadhub.kafka_access import principal
from leadhub.kafka_credentials import CredentialStore
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import participant_id

pytestmark = pytest.mark.integration


def partner_credential(hub: Any, partner: str, tmp_path: Path,
                       kafka: KafkaConnection) -> KafkaConnection:
    """The partner's credential from the CLI (created, or rotated if a test made it before)."""
    out = tmp_path / f"{partner}.env"
    made = hub.leadhub("partners", "credentials", "create", partner, "--out", str(out))
    if made.returncode == 2 and "already has a credential" in made.stderr:
        made = hub.leadhub("partners", "credentials", "rotate", partner, "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    return KafkaConnection(kafka.bootstrap, values["LEADHUB_KAFKA_USERNAME"],
                           values["LEADHUB_KAFKA_PASSWORD"])


def hub_principal(hub: Any, role: str, kafka: KafkaConnection) -> KafkaConnection:
    """A hub role's connection, from the credentials the local launcher stored."""
    stored = CredentialStore(Path(hub.env["LEADHUB_KAFKA_CREDENTIALS_DIR"]))
    connection = stored.connection(kafka.bootstrap, principal(role))
    assert connection is not None, f"no stored credential for {role}"
    return connection


def produce(connection: KafkaConnection, topic: str) -> str:
    """'ok' if the broker accepted one record, else the error's class name."""
    try:
        producer = KafkaProducer(**connection.client_options(), max_block_ms=10000,
                                 request_timeout_ms=10000, retries=0, bootstrap_timeout_ms=5000)
    except KafkaError as exc:  # a refused login fails the bootstrap
        return type(exc).__name__
    try:
        producer.send(topic, key=participant_id(1).encode(), value=b"probe").get(timeout=15)
        return "ok"
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        producer.close(timeout=5)


def read_count(connection: KafkaConnection, topic: str) -> int | str:
    """How many records of partition 0 the principal can read, or the refusal's class name."""
    consumer = KafkaConsumer(**connection.client_options(), group_id=None,
                             enable_auto_commit=False, request_timeout_ms=10000)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        found = 0
        for _ in range(6):  # about 3 s: the admin's read of the same record takes well under
            found += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
            if found:
                break
        return found
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        consumer.close()


def _seed_partition_zero(kafka: KafkaConnection, topics: list[str]) -> None:
    producer = KafkaProducer(**kafka.client_options(), acks="all")
    for topic in topics:
        producer.send(topic, key=b"seed", value=b"seed", partition=0)
    producer.flush(timeout=15)
    producer.close()


def test_a_partner_writes_its_own_inbound_topic_and_nothing_else(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, tmp_path: Path) -> None:
    police = partner_credential(hub, "evergreen-pd", tmp_path, kafka)
    assert produce(police, topics.inbound("evergreen-pd")) == "ok"
    assert produce(police, topics.inbound("county-pao")) == "TopicAuthorizationFailedError"
    for hub_topic in (topics.events, topics.dlq, topics.audit_access, topics.audit_checkpoints):
        assert produce(police, hub_topic) == "TopicAuthorizationFailedError", hub_topic


def test_a_partner_reads_no_topic_not_even_its_own(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, tmp_path: Path) -> None:
    readable = [topics.events, topics.dlq, topics.audit_access, topics.audit_checkpoints,
                topics.inbound("evergreen-pd"), topics.inbound("riverbend-sud")]
    _seed_partition_zero(kafka, readable)
    police = partner_credential(hub, "evergreen-pd", tmp_path, kafka)
    for topic in readable:
        assert read_count(kafka, topic) == 1, topic  # the records are there
        refused = read_count(police, topic)
        # No DESCRIBE right: the broker hides the topic (nothing arrives); DESCRIBE but no READ
        # (its own inbound topic): the fetch is refused.
        assert refused in (0, "TopicAuthorizationFailedError"), (topic, refused)


def test_a_revoked_or_wrong_credential_publishes_nothing(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, tmp_path: Path) -> None:
    defender = partner_credential(hub, "defender-assoc", tmp_path, kafka)
    inbound = topics.inbound("defender-assoc")
    assert produce(defender, inbound) == "ok"
    wrong = KafkaConnection(defender.bootstrap, "defender-assoc", uuid.uuid4().hex)
    assert produce(wrong, inbound) != "ok"
    revoked = hub.leadhub("partners", "credentials", "revoke", "defender-assoc")
    assert revoked.returncode == 0, revoked.stderr
    assert produce(defender, inbound) != "ok"
    unknown = hub.leadhub("partners", "credentials", "create", "no-such-partner")
    assert unknown.returncode == 2 and "not a partner" in unknown.stderr


def test_each_hub_principal_has_only_the_rights_its_step_needs(
        hub: Any, topics: TopicNames, kafka: KafkaConnection) -> None:
    inbound = topics.inbound("harbor-cm")
    _seed_partition_zero(kafka, [inbound, topics.events, topics.audit_access])
    validator = hub_principal(hub, "validator", kafka)
    projector = hub_principal(hub, "projector", kafka)
    api = hub_principal(hub, "api", kafka)
    audit = hub_principal(hub, "audit", kafka)
    assert read_count(validator, inbound) == 1
    assert read_count(validator, topics.audit_access) in (0, "TopicAuthorizationFailedError")
    assert produce(validator, topics.audit_access) == "TopicAuthorizationFailedError"
    assert read_count(projector, topics.events) == 1
    assert produce(projector, topics.events) == "TopicAuthorizationFailedError"
    assert read_count(projector, inbound) in (0, "TopicAuthorizationFailedError")
    assert produce(api, inbound) == "ok"
    assert produce(api, topics.events) == "TopicAuthorizationFailedError"
    assert read_count(api, topics.events) in (0, "TopicAuthorizationFailedError")
    assert read_count(audit, topics.events) == 1 and read_count(audit, inbound) == 1
    assert produce(audit, topics.events) == "TopicAuthorizationFailedError"
