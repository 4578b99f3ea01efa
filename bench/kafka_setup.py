"""How the benchmarks reach the secured broker: as which principal, with which password.

The local broker (``leadhub services start``) authenticates every client with
SASL/SCRAM-SHA-512 and authorizes it with ACLs (docs/architecture.md "Partner isolation on
Kafka"); ``leadhub services start`` stores its principals' passwords in the credentials
directory (:mod:`leadhub.kafka_credentials`). The benchmarks set up and delete their topics,
write logs straight to ``lead.events`` and read them back as the broker's admin principal
(its super user); the hub classes they run in-process (the live projector, the audit replay,
the API's access log) connect as their own role, as ``leadhub run ...`` does; the
``leadhub run ...`` children find their role's password through
``LEADHUB_KAFKA_CREDENTIALS_DIR`` (:func:`child_credentials_env`).

Without a stored password (an unsecured external broker) the connection is plaintext;
``LEADHUB_KAFKA_USERNAME``/``LEADHUB_KAFKA_PASSWORD``, if set, name the principal instead.
"""

from __future__ import annotations

import argparse
import os

from leadhub.kafka_credentials import kafka_connection
from leadhub.settings import load_settings
from schemas.kafka_connection import KafkaConnection

#: The local broker's address (``leadhub services start``).
DEFAULT_BOOTSTRAP = "127.0.0.1:39092"


def add_bootstrap_argument(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap``: the broker, ``LEADHUB_KAFKA_BOOTSTRAP`` or the local one by default."""
    parser.add_argument("--bootstrap", default=os.environ.get("LEADHUB_KAFKA_BOOTSTRAP")
                        or DEFAULT_BOOTSTRAP, help="Kafka bootstrap (default %(default)s)")


def bench_connection(bootstrap: str, role: str = "admin") -> KafkaConnection:
    """The broker at ``bootstrap`` as hub role ``role`` (admin, validator, projector, api,
    audit), with the password the local broker stored for it."""
    settings = load_settings(dict(os.environ, LEADHUB_KAFKA_BOOTSTRAP=bootstrap))
    return kafka_connection(settings, role)


def child_credentials_env() -> dict[str, str]:
    """What a ``leadhub run ...`` child given a state dir of its own needs to find its role's
    password: this process's credentials directory."""
    return {"LEADHUB_KAFKA_CREDENTIALS_DIR": str(load_settings().kafka_credentials_dir)}
