"""The local services launcher and the deployment file, exercised for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from schemas.kafka_connection import KafkaConnection
from tests.factories import ROOT, participant_id

LEADHUB = [sys.executable, "-m", "leadhub.cli"]

pytestmark = pytest.mark.integration


def _leadhub(*args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEADHUB, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or dict(os.environ), timeout=timeout, check=False)


def test_status_reports_both_services_with_addresses(kafka: KafkaConnection,
                                                     postgres_server_url: str) -> None:
    result = _leadhub("services", "status", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert report["kafka"]["running"] and report["kafka"]["address"] == kafka.bootstrap
    assert report["postgres"]["running"]
    assert report["postgres"]["address"].startswith("postgresql+psycopg://")
    text = _leadhub("services", "status").stdout
    assert "kafka" in text and "127.0.0.1" in text and "postgres" in text


def test_start_when_running_says_so(kafka: KafkaConnection) -> None:
    result = _leadhub("services", "start", "kafka")
    assert result.returncode == 0
    assert "already running" in result.stdout or "external" in result.stdout


def test_missing_java_is_a_one_line_error_with_exit_code_2(tmp_path: Path) -> None:
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    env = {
        "PATH": str(bare_path),
        "HOME": str(tmp_path),
        "LEADHUB_STATE_DIR": str(tmp_path / "state"),
        "LEADHUB_CACHE_DIR": str(tmp_path / "cache"),
        "LEADHUB_KAFKA_PORT": "39991",
        "LEADHUB_KAFKA_CONTROLLER_PORT": "39992",
    }
    result = _leadhub("services", "start", "kafka", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "java not found" in result.stderr and "install" in result.stderr
    assert "Traceback" not in result.stderr


def test_publish_with_no_broker_fails_fast_and_clearly(tmp_path: Path) -> None:
    event = {"event_id": "6f1c1f43-3a57-4a53-9d55-3f5b1c8f2d11", "type": "ConsentRevoked",
             "participant_id": participant_id(1),
             "occurred_at": "2026-01-02T03:04:05.000000Z",
             "source_partner": None, "payload": {"consent_id": "c-1"}}
    events = tmp_path / "one.jsonl"
    events.write_text(json.dumps(event) + "\n")
    env = dict(os.environ, LEADHUB_KAFKA_BOOTSTRAP="127.0.0.1:1",
               LEADHUB_KAFKA_USERNAME="casemgmt", LEADHUB_KAFKA_PASSWORD="not-checked-here")
    started = time.monotonic()
    result = _leadhub("publish", "--as", "casemgmt", str(events), env=env, timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 60
    assert "Traceback" not in result.stderr
    assert "leadhub: error: cannot reach Kafka at 127.0.0.1:1" in result.stderr


def test_publish_without_a_partner_credential_is_refused(tmp_path: Path) -> None:
    events = tmp_path / "none.jsonl"
    events.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LEADHUB_KAFKA_USERNAME", "LEADHUB_KAFKA_PASSWORD")}
    refused = _leadhub("publish", "--as", "county-pao", str(events), env=env)
    assert refused.returncode == 2
    assert "LEADHUB_KAFKA_USERNAME" in refused.stderr and "Traceback" not in refused.stderr
    other = _leadhub("publish", "--as", "county-pao", str(events),
                     env=dict(env, LEADHUB_KAFKA_USERNAME="evergreen-pd",
                              LEADHUB_KAFKA_PASSWORD="x"))
    assert other.returncode == 2
    assert "not county-pao" in other.stderr


def test_compose_file_is_valid_for_deployment() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    broker = services["kafka"]["command"][0]
    assert "process.roles=broker,controller" in broker
    assert "StandardAuthorizer" in broker and "allow.everyone.if.no.acl.found=false" in broker
    protocols = next(line for line in broker.splitlines()
                     if "listener.security.protocol.map=" in line)
    assert set(re.findall(r":(\w+)", protocols)) == {"SASL_PLAINTEXT"}, protocols
    assert {"postgres", "validator", "projector", "api", "topics"} <= set(services)
    assert "sink" not in services
    for name, role in (("validator", "validator"), ("projector", "projector"),
                       ("api", "api"), ("topics", "admin")):
        assert services[name]["environment"]["LEADHUB_KAFKA_USERNAME"] == f"leadhub-{role}"
        assert f"name=leadhub-{role}," in broker
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False
    ).returncode == 0:
        checked = subprocess.run(["docker", "compose", "--env-file", ".env.example", "config",
                                  "-q"], cwd=ROOT,
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(("variable", "value"), [("LEADHUB_PARTITIONS", "four"),
                                                 ("LEADHUB_PARTITIONS", "0"),
                                                 ("LEADHUB_TICK_SECONDS", "soon"),
                                                 ("LEADHUB_METRICS_PORT", "-1")])
def test_a_bad_setting_is_exit_2_naming_the_variable(variable: str, value: str) -> None:
    result = _leadhub("topics", "create", env=dict(os.environ, **{variable: value}))
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr and "Traceback" not in result.stderr
    assert "this is a bug" not in result.stderr


def test_kafka_cluster_ids_never_look_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool reads ``-t -x...`` as a missing id: a leading dash must be redrawn."""
    import uuid

    from leadhub.services import kafka as kafka_service

    # b"\xf8" encodes to "-" first in URL-safe base64; the second draw does not.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(kafka_service.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka_service.new_cluster_id()
    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA"
    monkeypatch.undo()
    assert not any(kafka_service.new_cluster_id().startswith("-") for _ in range(2000))
