"""Shared fixtures: a real Kafka broker and a database parametrized over SQLite and PostgreSQL.

Kafka: ``LEADHUB_KAFKA_BOOTSTRAP`` if set; else a Docker engine that answers a ping runs
testcontainers' Kafka; else the project's own launcher (Maven jars, KRaft). Under ``CI=true`` a
service that cannot be had fails the run; elsewhere the dependent tests are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadhub.settings import load_settings
from schemas.topics import TopicNames

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} unavailable: {exc}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for this test session."""
    settings = load_settings()
    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
        return
    from leadhub.services.kafka import KafkaService

    try:
        service = KafkaService(settings)
        service.start()
    except Exception as exc:
        _unavailable("Kafka broker", exc)
    yield service.bootstrap


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a PostgreSQL server (the launcher's cluster unless LEADHUB_DATABASE_URL is set)."""
    from leadhub.services.postgres import PostgresService

    service = PostgresService(load_settings())
    try:
        service.start()
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    return service.url


def _fresh_postgres_database(server_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"leadhub_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: Any, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database; the same test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'view.sqlite'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    yield from _fresh_postgres_database(server_url)


@pytest.fixture
def topics() -> TopicNames:
    """Topic names under a prefix unique to this test, so tests never see each other's data."""
    return TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
