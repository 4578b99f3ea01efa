"""A single-node KRaft Kafka broker built from Apache Kafka's Maven Central jars.

``KafkaService.start()`` resolves ``org.apache.kafka:kafka_2.13`` and a Log4j2 backend into a
reusable cache with Maven, formats a storage directory once, runs ``kafka.Kafka`` in the
background on 127.0.0.1 and waits until it answers a metadata request. Every step is
idempotent: a second ``start`` reuses the jars, the storage and a running broker.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from leadhub.services import ServiceError
from leadhub.services.process import read_pid, run_checked, spawn, terminate, wait_until
from leadhub.settings import Settings

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


def broker_answers(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request within ``timeout_ms``."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
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
    """The local broker: jars in ``cache_dir``, storage, pid and log in ``state_dir/kafka``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.libs = settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = self.home / "kafka.log"
        self.data_dir = self.home / "data"
        self.properties = self.home / "server.properties"
        self.log4j_config = self.home / "log4j2.properties"

    @property
    def external(self) -> bool:
        """True when ``LEADHUB_KAFKA_BOOTSTRAP`` names a broker we must not manage."""
        return self.settings.kafka_bootstrap is not None

    @property
    def bootstrap(self) -> str:
        return self.settings.effective_kafka_bootstrap

    def status(self) -> KafkaStatus:
        """Report whether the broker answers, and whether this launcher manages it."""
        pid = None if self.external else read_pid(self.pid_file)
        return KafkaStatus(
            bootstrap=self.bootstrap,
            running=broker_answers(self.bootstrap),
            managed=not self.external,
            pid=pid,
            log_file=None if self.external else self.log_file,
        )

    def start(self, timeout_s: float = 120.0) -> str:
        """Ensure the broker answers; return a one-line account of what was done."""
        if self.external:
            if not broker_answers(self.bootstrap):
                raise ServiceError(
                    f"LEADHUB_KAFKA_BOOTSTRAP={self.bootstrap} does not answer; "
                    "start that broker or unset the variable to use the local one"
                )
            return f"kafka: using external broker at {self.bootstrap}"
        pid = read_pid(self.pid_file)
        if pid is not None and broker_answers(self.bootstrap):
            return f"kafka: already running at {self.bootstrap} (pid {pid})"
        if pid is None and broker_answers(self.bootstrap):
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
            lambda: broker_answers(self.bootstrap, timeout_ms=2000),
            timeout_s,
            f"kafka broker (log: {self.log_file})",
            alive=lambda: read_pid(self.pid_file) is not None,
        )
        return f"kafka: started at {self.bootstrap} (pid {pid}, log {self.log_file})"

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
                raise ServiceError(
                    f"{tool} not found: install it (e.g. apt-get install {package})",
                    exit_code=2,
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
        self.home.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},"
                    f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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
        )
        self.log4j_config.write_text(_LOG4J2)

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
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
            ],
            what="formatting the Kafka storage directory",
        )
