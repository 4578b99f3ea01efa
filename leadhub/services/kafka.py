"""A single-node KRaft Kafka broker built from Apache Kafka's Maven Central jars.

``KafkaService.start()`` resolves ``org.apache.kafka:kafka_2.13`` and a Log4j2 backend into a
reusable cache with Maven, formats a storage directory once, runs ``kafka.Kafka`` in the
background on 127.0.0.1 and waits until it answers a metadata request. Every step is
idempotent: a second ``start`` reuses the jars, the storage and a running broker.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from leadhub.kafka_access import ADMIN_ROLE, HUB_ROLES, hub_grants, principal
from leadhub.kafka_admin import apply_grants, set_password
from leadhub.kafka_credentials import CredentialStore, kafka_connection, new_password
from leadhub.services import PrerequisiteMissing, ServiceError
from leadhub.services.process import read_pid, run_checked, spawn, terminate, wait_until
from leadhub.settings import Settings
from schemas.kafka_connection import SASL_MECHANISM, KafkaConnection
from schemas.topics import TopicNames

LOG4J_VERSION = "2.25.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>org.leadhub</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def broker_answers(connection: KafkaConnection, timeout_ms: int = 3000) -> bool:
    """True if the broker answers a metadata request within ``timeout_ms`` (logged in as the
    connection's principal, if it has one)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            **connection.client_options(),
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            client_id="leadhub-probe",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


@dataclass(frozen=True)
class KafkaStatus:
    """What ``status`` reports about the broker."""

    bootstrap: str
    running: bool
    managed: bool
    pid: int | None
    log_file: Path | None


class KafkaService:
    """The local broker: jars in ``cache_dir``, storage, pid and log in ``state_dir/kafka``.

    The broker authenticates every client with SASL/SCRAM-SHA-512 and authorizes it with ACLs
    (``StandardAuthorizer``, nothing allowed without an ACL). ``start`` creates the hub's
    principals (:data:`leadhub.kafka_access.HUB_ROLES` and the admin) with random passwords kept
    in the credentials directory, and their ACLs for the configured topic prefix.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.libs = settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = self.home / "kafka.log"
        self.data_dir = self.home / "data"
        self.properties = self.home / "server.properties"
        self.log4j_config = self.home / "log4j2.properties"
        self.credentials = CredentialStore(settings.kafka_credentials_dir)
        #: Written once the storage is formatted with SASL/SCRAM (absent: an older broker).
        self.sasl_marker = self.data_dir / ".leadhub-sasl"

    @property
    def external(self) -> bool:
        """True when ``LEADHUB_KAFKA_BOOTSTRAP`` names a broker we must not manage."""
        return self.settings.kafka_bootstrap is not None

    @property
    def bootstrap(self) -> str:
        return self.settings.effective_kafka_bootstrap

    @property
    def admin(self) -> KafkaConnection:
        """The connection as the broker's super user (plaintext if no credential is stored)."""
        return kafka_connection(self.settings, ADMIN_ROLE)

    def status(self) -> KafkaStatus:
        """Report whether the broker answers, and whether this launcher manages it."""
        pid = None if self.external else read_pid(self.pid_file)
        return KafkaStatus(
            bootstrap=self.bootstrap,
            running=broker_answers(self.admin),
            managed=not self.external,
            pid=pid,
            log_file=None if self.external else self.log_file,
        )

    def start(self, timeout_s: float = 120.0) -> str:
        """Ensure the broker answers; return a one-line account of what was done."""
        if self.external:
            if not broker_answers(self.admin):
                raise ServiceError(
                    f"LEADHUB_KAFKA_BOOTSTRAP={self.bootstrap} does not answer (as "
                    f"{self.admin.username or 'an anonymous client'}); start that broker or "
                    "unset the variable to use the local one"
                )
            return f"kafka: using external broker at {self.bootstrap}"
        pid = read_pid(self.pid_file)
        if pid is not None and self.sasl_marker.exists() and broker_answers(self.admin):
            self._ensure_principals()
            return f"kafka: already running at {self.bootstrap} (pid {pid})"
        if pid is not None:
            # Running but not as this launcher configures it (made by an older leadhub without
            # SASL, or refusing the admin's login): replace it (local development data only).
            terminate(pid, timeout_s=60.0)
            self.pid_file.unlink(missing_ok=True)
        elif _port_open(self.settings.kafka_port):
            raise ServiceError(
                f"something else already listens on {self.bootstrap}; stop it or set "
                "LEADHUB_KAFKA_PORT / LEADHUB_KAFKA_BOOTSTRAP"
            )
        self._require_tools()
        self.fetch_jars()
        self._write_config()
        self._format_storage()
        java = shutil.which("java") or "java"
        command = [
            java,
            "-Xms256m",
            "-Xmx768m",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            "-cp",
            f"{self.libs}/*",
            "kafka.Kafka",
            str(self.properties),
        ]
        pid = spawn(command, self.log_file, self.pid_file, cwd=self.home)
        wait_until(
            lambda: broker_answers(self.admin, timeout_ms=2000),
            timeout_s,
            f"kafka broker (log: {self.log_file})",
            alive=lambda: read_pid(self.pid_file) is not None,
        )
        self._ensure_principals()
        return f"kafka: started at {self.bootstrap} (pid {pid}, log {self.log_file})"

    def _ensure_principals(self) -> None:
        """Give each hub role its SCRAM credential (the stored password, made once) and the
        hub's ACLs. Idempotent; it also heals a broker whose storage was made again."""
        for role in HUB_ROLES:
            set_password(self.admin, principal(role), self._stored_or_new(principal(role)))
        apply_grants(self.admin, hub_grants(TopicNames(self.settings.topic_prefix)))

    def stop(self) -> str:
        """Stop the broker this launcher started; leave external brokers alone."""
        if self.external:
            return f"kafka: external broker at {self.bootstrap} left running"
        pid = read_pid(self.pid_file)
        if pid is None:
            return "kafka: not running"
        terminate(pid, timeout_s=60.0)
        self.pid_file.unlink(missing_ok=True)
        return f"kafka: stopped (pid {pid})"

    def _require_tools(self) -> None:
        for tool, package in (("java", "openjdk-17-jre-headless"), ("mvn", "maven")):
            if shutil.which(tool) is None:
                raise PrerequisiteMissing(
                    f"{tool} not found: install it (e.g. apt-get install {package})"
                )

    def fetch_jars(self) -> None:
        """Resolve the broker's runtime jars into the cache once; later calls reuse them."""
        marker = self.libs / ".complete"
        if marker.exists():
            return
        work = self.libs.parent
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(
            _POM.format(kafka=self.settings.kafka_version, log4j=LOG4J_VERSION)
        )
        run_checked(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={self.libs}",
            ],
            what=f"fetching Apache Kafka {self.settings.kafka_version} jars with Maven",
            cwd=work,
        )
        marker.write_text(self.settings.kafka_version)

    def _write_config(self) -> None:
        """server.properties (mode 0600: it holds the broker's own passwords)."""
        self.home.mkdir(parents=True, exist_ok=True)
        s = self.settings
        admin, controller = principal(ADMIN_ROLE), "leadhub-controller"
        admin_password = self._stored_or_new(admin)
        controller_password = self._stored_or_new(controller)
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        text = "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                f"listeners=CLIENT://127.0.0.1:{s.kafka_port},"
                f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                f"advertised.listeners=CLIENT://127.0.0.1:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=CLIENT",
                "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT",
                # Clients and the broker itself: SCRAM (credentials in the cluster metadata).
                f"listener.name.client.sasl.enabled.mechanisms={SASL_MECHANISM}",
                f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
                f"listener.name.client.{SASL_MECHANISM.lower()}.sasl.jaas.config={scram} "
                f'required username="{admin}" password="{admin_password}";',
                # The controller listener cannot use SCRAM (its credentials live in the metadata
                # the controller serves): PLAIN with one static user, on loopback.
                "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                "sasl.mechanism.controller.protocol=PLAIN",
                f"listener.name.controller.plain.sasl.jaas.config={plain} required "
                f'username="{controller}" password="{controller_password}" '
                f'user_{controller}="{controller_password}";',
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                f"super.users=User:{admin};User:{controller}",
                "allow.everyone.if.no.acl.found=false",
                f"log.dirs={self.data_dir}",
                f"num.partitions={s.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # A killed validator's open transaction is aborted within a second of its
                # timeout (default check: every 10 s), so read_committed readers resume.
                "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                "auto.create.topics.enable=true",
                "",
            ]
        )
        descriptor = os.open(self.properties, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        self.log4j_config.write_text(_LOG4J2)

    def _stored_or_new(self, user: str) -> str:
        password = self.credentials.password(user)
        if password is None:
            password = new_password()
            self.credentials.save(user, password)
        return password

    def _format_storage(self) -> None:
        """Format the storage once, with the admin's SCRAM credential in its first metadata.

        Storage formatted by an older leadhub (no SASL marker) is local development data the
        new broker could not log into: it is removed and formatted again.
        """
        marker = self.sasl_marker
        if (self.data_dir / "meta.properties").exists():
            if marker.exists():
                return
            print(f"kafka: {self.data_dir} was made without SASL; re-creating it", flush=True)
            shutil.rmtree(self.data_dir)
        admin = principal(ADMIN_ROLE)
        admin_password = self._stored_or_new(admin)
        cluster_id = new_cluster_id()
        run_checked(
            [
                shutil.which("java") or "java",
                f"-Dlog4j2.configurationFile={self.log4j_config}",
                "-cp",
                f"{self.libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties),
                "--add-scram",
                f"{SASL_MECHANISM}=[name={admin},password={admin_password}]",
            ],
            what="formatting the Kafka storage directory",
        )
        marker.write_text("SCRAM-SHA-512 + StandardAuthorizer\n")


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64, never starting with ``-``, which
    the storage tool's argument parser takes for an option (as Kafka's own ``Uuid.randomUuid``
    avoids; a clean-clone CI run failed on one)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0
