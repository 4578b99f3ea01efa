"""Shared fixtures: a real Kafka broker and a database parametrized over SQLite and PostgreSQL.

Kafka: ``LEADHUB_KAFKA_BOOTSTRAP`` if set; else a Docker engine that answers a ping runs
testcontainers' Kafka (unsecured: the isolation tests then skip); else the project's own
launcher (Maven jars, KRaft, SASL/SCRAM with ACLs). The ``kafka`` fixture is a
:class:`KafkaConnection` as the broker's admin; the hub processes a test starts connect as
their own least-privileged principals. Under ``CI=true`` a service that cannot be had fails the
run; elsewhere the dependent tests are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadhub.kafka_credentials import kafka_connection
from leadhub.settings import load_settings
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE_FILE

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The local broker's principals (leadhub/kafka_credentials.py): every process a test starts,
# whatever LEADHUB_STATE_DIR it is given, connects as its role with these credentials.
os.environ.setdefault("LEADHUB_KAFKA_CREDENTIALS_DIR", str(load_settings().kafka_credentials_dir))


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
def kafka() -> Iterator[KafkaConnection]:
    """A real Kafka broker for this test session, connected as its admin principal."""
    settings = load_settings()
    if settings.kafka_bootstrap:
        yield kafka_connection(settings, "admin")
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield KafkaConnection(container.get_bootstrap_server())
        return
    from leadhub.services.kafka import KafkaService

    try:
        service = KafkaService(settings)
        service.start()
    except Exception as exc:
        _unavailable("Kafka broker", exc)
    yield service.admin


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
        _drop_database(admin, name)
        admin.dispose()


def _drop_database(admin: Any, name: str) -> None:
    """Drop a test database; retried, as a backend still going (autovacuum) can refuse it."""
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except SQLAlchemyError as exc:
            if attempt == 4:
                print(f"could not drop test database {name}: {type(exc).__name__}")
            time.sleep(1.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: Any, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database; the same test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'view.sqlite'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    yield from _fresh_postgres_database(server_url)


@pytest.fixture
def topics(request: pytest.FixtureRequest) -> Iterator[TopicNames]:
    """Topic names under a prefix unique to this test, so tests never see each other's data.

    Afterwards the prefix's topics and consumer groups are deleted from the broker the test
    used: a broker holding thousands of leftover partitions spends several times the CPU per
    message, which slows every later test and benchmark on these two cores.
    """
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    yield names
    if "kafka" in request.fixturenames:
        _delete_prefix(request.getfixturevalue("kafka"), names.prefix)


def _delete_prefix(kafka: KafkaConnection, prefix: str) -> None:
    """Delete the prefix's topics and groups; a failure is reported, not a test failure."""
    from leadhub.services import ServiceError
    from leadhub.topics_admin import delete_prefix

    try:
        delete_prefix(kafka, prefix)
    except ServiceError as exc:
        print(f"cleanup of {prefix}* failed: {exc}")




class HubProcesses:
    """``leadhub run`` child processes for one test, all sharing that test's topic prefix."""

    def __init__(self, kafka: KafkaConnection, topics: TopicNames, state_dir: Path,
                 database_url: str | None = None) -> None:
        import sys

        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("LEADHUB_KAFKA_USERNAME", "LEADHUB_KAFKA_PASSWORD")}
        self.env.update(
            LEADHUB_KAFKA_BOOTSTRAP=kafka.bootstrap,
            LEADHUB_TOPIC_PREFIX=topics.prefix,
            LEADHUB_SITE_FILE=str(SITE_FILE),
            LEADHUB_STATE_DIR=str(state_dir),
            LEADHUB_TICK_SECONDS="1",
            LEADHUB_PARTITIONS="4",
        )
        if database_url:
            self.env["LEADHUB_DATABASE_URL"] = database_url
        self.python = sys.executable
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children: dict[str, Any] = {}

    def leadhub(self, *args: str, timeout: float = 120) -> Any:
        import subprocess

        return subprocess.run([self.python, "-m", "leadhub.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, step: str, name: str | None = None) -> None:
        """Start ``leadhub run STEP`` in the background (output in the state dir's logs).

        ``name`` (default: the step) tells apart two workers of one step; a second worker
        gets a state dir of its own, as a second machine would have.
        """
        import subprocess

        name = name or step
        env = dict(self.env, LEADHUB_INSTANCE_ID=name)
        if name != step:
            env["LEADHUB_STATE_DIR"] = str(Path(self.env["LEADHUB_STATE_DIR"]) / name)
        log = (self.logs / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(
            [self.python, "-m", "leadhub.cli", "run", step], env=env,
            stdout=log, stderr=subprocess.STDOUT)

    def kill(self, step: str, sig: int) -> None:
        """Send ``sig`` to a step (or a worker started by name) and wait for it to exit."""
        child = self.children.pop(step)
        child.send_signal(sig)
        child.wait(timeout=60)

    def stop_all(self) -> None:
        import signal

        for step in list(self.children):
            if self.children[step].poll() is None:
                self.kill(step, signal.SIGTERM)
            else:
                self.children.pop(step)

    def log_tail(self, step: str, lines: int = 40) -> str:
        path = self.logs / f"{step}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if (
            path.exists()) else ""


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item (``item.rep_call``) for fixtures' teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def hub(request: pytest.FixtureRequest, kafka: KafkaConnection, topics: TopicNames,
        tmp_path: Path) -> Iterator[HubProcesses]:
    """Topics created under this test's prefix; start steps with ``hub.start(step)``.

    When the test fails, its hub processes' logs and ``leadhub status`` are printed (pytest
    shows them under the failure)."""
    processes = HubProcesses(kafka, topics, tmp_path / "hub")
    created = processes.leadhub("topics", "create")
    assert created.returncode == 0, created.stderr
    yield processes
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for log in sorted(processes.logs.glob("*.log")):
            print(f"--- {log.stem} log (last 60 lines) ---\n{processes.log_tail(log.stem, 60)}")
        status = processes.leadhub("status", timeout=60)
        print(f"--- leadhub status (exit {status.returncode}) ---\n{status.stdout}{status.stderr}")
    processes.stop_all()


class LiveView:
    """The SQL view of one test, written by the test's ``leadhub run projector`` processes."""

    def __init__(self, database_url: str) -> None:
        from consumers.store import ViewStore

        self.store = ViewStore(database_url)
        self.store.create_schema()

    def rows(self, recipient: str, participant_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.rows_for(recipient, participant_id)

    def wait_for(self, predicate: Any, timeout_s: float = 90.0, what: str = "") -> None:
        """Poll until ``predicate()`` holds; fail the test after ``timeout_s``."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        pytest.fail(f"the view did not reach the expected state in {timeout_s:.0f}s {what}")

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def live_view(request: pytest.FixtureRequest, database_url: str) -> Iterator[LiveView]:
    """A view database (SQLite and PostgreSQL); the test's hub processes project into it."""
    view = LiveView(database_url)
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").env["LEADHUB_DATABASE_URL"] = database_url
    yield view
    view.close()
