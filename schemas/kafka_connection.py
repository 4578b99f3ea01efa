"""How a process reaches the broker: the bootstrap address and, on a secured broker, who it is.

Every Kafka client of the hub (partner SDK, validator, projector, API, audit tools) is built
from a :class:`KafkaConnection`, so the SASL settings are spelled once. The hub's brokers
authenticate clients with SASL/SCRAM-SHA-512 and authorize them with ACLs per principal
(docs/architecture.md "Partner isolation on Kafka"); a connection without a username talks
plaintext to an unsecured broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SASL_MECHANISM = "SCRAM-SHA-512"
#: librdkafka's name for the Java client's (and kafka-python's) partitioner: murmur2 of the key
#: (docs/wire-format.md "Partitioner"). librdkafka's default, CRC32, would put a participant's
#: events on another partition than a partner's Java client does.
LIBRDKAFKA_PARTITIONER = "murmur2_random"


@dataclass(frozen=True)
class KafkaConnection:
    """A broker address and an optional SCRAM principal (``username``/``password``)."""

    bootstrap: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("a Kafka username needs its password, and a password its username")

    @property
    def secured(self) -> bool:
        """True when the client authenticates (SASL/SCRAM) as ``username``."""
        return self.username is not None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaProducer/KafkaConsumer/KafkaAdminClient."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.username is not None:
            options.update(
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=SASL_MECHANISM,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def librdkafka_config(self) -> dict[str, Any]:
        """The same settings as configuration properties of librdkafka (confluent-kafka)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.username is not None:
            config.update({
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": SASL_MECHANISM,
                "sasl.username": self.username,
                "sasl.password": self.password,
            })
        return config

    def librdkafka_producer_config(self) -> dict[str, Any]:
        """librdkafka settings every hub producer shares: these connection settings, the Java
        client's partitioner, ``acks=all`` and idempotence."""
        return {**self.librdkafka_config(), "partitioner": LIBRDKAFKA_PARTITIONER,
                "acks": "all", "enable.idempotence": True}

    def describe(self) -> str:
        """``bootstrap`` and the principal, for messages (never the password)."""
        who = f" as {self.username}" if self.username else ""
        return f"{self.bootstrap}{who}"
