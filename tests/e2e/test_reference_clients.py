"""The reference partner clients in Java and Node.js (``examples/``) against the running hub.

Each client is built from its own sources (Maven / npm, only when they changed), then run as a
partner would run it: it reads ``schemas/avro``, publishes a few valid events and one bad one to
this test's ``lead.in.harbor-cm`` and prints a JSON summary. The test checks, against the hub's
own code, what the client claims and what the hub made of it:

* the records on the inbound topic: keyed by the participant id's UTF-8 bytes, on the
  partition murmur2 of the key gives (the hub's partitioner), each valid one a strict
  single-object encoding of the type and version the summary names;
* the live view (validator + projector processes) equals, recipient by recipient and row by
  row, the pure projection of the decoded events: every valid event reached exactly the
  recipients the site policy names;
* ``lead.dlq`` holds exactly one dead letter, the bad record's, with the reason the client
  expected.

Under ``CI=true`` a missing ``java``/``mvn`` or ``node``/``npm`` fails the test; elsewhere it
is skipped. The view runs on SQLite only: the clients exercise the wire format and the
validator, and the projector's two backends are covered by the other pipeline tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from consumers.store import encode_row_json
from processors.offline import project_events, rows_for
from processors.projector import Projector
from processors.site import load_site
from schemas.catalog import load_catalog
from schemas.codec import decode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.conftest import IN_CI, SITE_FILE
from tests.factories import ROOT, new_participant_id

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "examples"
SCHEMAS_DIR = ROOT / "schemas" / "avro"
CATALOG = load_catalog()
SITE = load_site(SITE_FILE)
PARTNER = "harbor-cm"
#: A cold Maven build downloads about 60 MB; a warm one takes seconds.
BUILD_TIMEOUT_S = 600
#: How long the validator and projector get to take the client's events into the view.
VIEW_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class ReferenceClient:
    """How to build and run one example client."""

    name: str
    directory: Path
    tools: tuple[str, ...]
    build: Callable[[Path], None]
    command: tuple[str, ...]


def _run_build(command: list[str], directory: Path) -> None:
    """Run one build command in ``directory``; fail the test with its output if it fails."""
    started = time.monotonic()
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed in {directory} (exit {done.returncode}):\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}", pytrace=False)
    print(f"{' '.join(command)}: {time.monotonic() - started:.1f}s")


def _build_java(directory: Path) -> None:
    """``mvn package`` unless the last build finished after the pom and every source changed."""
    jar = directory / "target" / "leadhub-java-client.jar"
    stamp = directory / "target" / ".leadhub-built"
    sources = [directory / "pom.xml", *(p for p in (directory / "src").rglob("*") if p.is_file())]
    newest = max(p.stat().st_mtime for p in sources)
    if jar.exists() and stamp.exists() and stamp.stat().st_mtime > newest:
        return
    _run_build(["mvn", "-q", "-B", "package"], directory)
    stamp.touch()  # Maven leaves an up-to-date jar alone, so its own mtime can be older


def _build_node(directory: Path) -> None:
    """``npm ci`` unless node_modules was installed from this very package-lock.json."""
    lock = hashlib.sha256((directory / "package-lock.json").read_bytes()).hexdigest()
    stamp = directory / "node_modules" / ".leadhub-package-lock.sha256"
    if stamp.exists() and stamp.read_text().strip() == lock:
        return
    _run_build(["npm", "ci", "--no-audit", "--no-fund"], directory)
    stamp.write_text(lock + "\n")


CLIENTS = {
    "java": ReferenceClient("java", EXAMPLES / "java-client", ("java", "mvn"), _build_java,
                            ("java", "-jar", "target/leadhub-java-client.jar")),
    "node": ReferenceClient("node", EXAMPLES / "node-client", ("node", "npm"), _build_node,
                            ("node", "index.js")),
}


@pytest.fixture(params=sorted(CLIENTS))
def reference_client(request: pytest.FixtureRequest) -> ReferenceClient:
    """The client, built (first in the test's fixtures, so no hub waits on a build)."""
    client = CLIENTS[request.param]
    missing = [tool for tool in client.tools if shutil.which(tool) is None]
    if missing:
        message = (f"the {client.name} reference client ({client.directory.relative_to(ROOT)}) "
                   f"needs {' and '.join(missing)} on PATH")
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    client.build(client.directory)
    return client


def _partner_credential(hub: Any, kafka: KafkaConnection, directory: Path) -> dict[str, str]:
    """The partner's ``LEADHUB_KAFKA_USERNAME``/``_PASSWORD`` from the hub's CLI, as its
    operator hands them to the partner (created, or rotated if an earlier test made one);
    nothing on an unsecured broker."""
    if not kafka.secured:
        return {}
    out = directory / f"{PARTNER}.env"
    made = hub.leadhub("partners", "credentials", "create", PARTNER, "--out", str(out))
    if made.returncode == 2 and "already has a credential" in made.stderr:
        made = hub.leadhub("partners", "credentials", "rotate", PARTNER, "--out", str(out))
    assert made.returncode == 0, made.stderr
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


def _run_client(client: ReferenceClient, kafka: KafkaConnection, credential: dict[str, str],
                topics: TopicNames, participant: str) -> dict[str, Any]:
    """Run the client against this test's topics; return its JSON summary (last stdout line)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEADHUB_")}
    env.update(credential, LEADHUB_KAFKA_BOOTSTRAP=kafka.bootstrap,
               LEADHUB_TOPIC_PREFIX=topics.prefix)
    command = [*client.command, "--partner", PARTNER, "--participant", participant,
               "--schemas", str(SCHEMAS_DIR)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=client.directory, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    print(f"{client.name} client under {topics.prefix}: {time.monotonic() - started:.1f}s")
    assert done.returncode == 0, f"{client.name} client failed:\n{done.stderr[-4000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{client.name} client printed no summary:\n{done.stderr[-4000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def _inbound_records(kafka: KafkaConnection, topic: str,
                     count: int) -> tuple[dict[tuple[int, int], Any], int]:
    """The first ``count`` records of ``topic`` by (partition, offset), and its partition count."""
    consumer = KafkaConsumer(topic, **kafka.client_options(), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=15000)
    try:
        records = {(m.partition, m.offset): m for _, m in zip(range(count), consumer,
                                                              strict=False)}
        partitions = len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()
    return records, partitions


def _dead_letters(kafka: KafkaConnection, topics: TopicNames,
                  timeout_s: float = 30.0) -> list[Any]:
    """Every committed record of ``lead.dlq``, once at least one has arrived (or the timeout)."""
    consumer = KafkaConsumer(topics.dlq, **kafka.client_options(),
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             isolation_level="read_committed")
    letters: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            polled = [m for records in batch.values() for m in records]
            letters.extend(polled)
            if letters and not polled:
                break
    finally:
        consumer.close()
    return letters


def _expected_view(events: list[Event]) -> dict[str, list[dict[str, Any]]]:
    """Each site partner's rows for ``events``, from the pure projector, in the view's JSON."""
    view = project_events(sorted(events, key=lambda e: (e.occurred_at, e.event_id)),
                          Projector(SITE, CATALOG), at=datetime.now(UTC))
    return {partner: [json.loads(encode_row_json(row.to_json()))
                      for row in rows_for(view, partner)]
            for partner in SITE.partner_ids()}


def _hub_states(hub: Any) -> str:
    """Whether each hub process still runs (a stopped one explains an empty view)."""
    states = []
    for name, child in hub.children.items():
        code = child.poll()
        states.append(f"{name}: " + ("running" if code is None else f"exited with {code}"))
    return ", ".join(states)


@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_reference_client_events_reach_the_view_and_the_bad_one_the_dlq(
    reference_client: ReferenceClient, hub: Any, topics: TopicNames, kafka: KafkaConnection,
    live_view: Any, tmp_path: Path,
) -> None:
    credential = _partner_credential(hub, kafka, tmp_path)
    hub.start("validator")
    hub.start("projector")
    participant = new_participant_id()
    summary = _run_client(reference_client, kafka, credential, topics, participant)

    inbound = topics.inbound(PARTNER)
    assert summary["client"] == reference_client.name
    assert (summary["topic"], summary["participant_id"]) == (inbound, participant)
    valid, bad = summary["valid"], summary["bad"]
    assert len({item["type"] for item in valid}) >= 3, "several event types"
    for item in [*valid, bad]:
        assert item["fingerprint"] == CATALOG.get(item["type"], item["version"]).fingerprint

    records, partitions = _inbound_records(kafka, inbound, len(valid) + 1)
    events = []
    for item in valid:
        record = records[(item["partition"], item["offset"])]
        assert record.key == participant.encode()
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % partitions
        event = decode(record.value, CATALOG)  # strict: the one canonical encoding
        assert (event.event_id, event.type, event.source_partner) == (
            item["event_id"], item["type"], None)
        events.append(dataclasses.replace(event, source_partner=PARTNER))
    bad_record = records[(bad["partition"], bad["offset"])]

    expected = _expected_view(events)
    assert sorted(row["event_id"] for row in expected[PARTNER]) == sorted(
        item["event_id"] for item in valid), "a partner sees every event it published"
    assert any(expected[p] for p in expected if p != PARTNER), "shared with other partners"
    assert any(row["consent_ids"] for rows in expected.values() for row in rows), (
        "the client's consent opens a row")

    def view() -> dict[str, list[dict[str, Any]]]:
        return {p: live_view.rows(p, participant) for p in expected}

    deadline = time.monotonic() + VIEW_TIMEOUT_S
    while (view() != expected and time.monotonic() < deadline
           and all(child.poll() is None for child in hub.children.values())):
        time.sleep(0.2)
    assert view() == expected, (
        f"the view did not show the {reference_client.name} client's events as the policy "
        f"says within {VIEW_TIMEOUT_S:.0f}s ({_hub_states(hub)})\n"
        f"validator log:\n{hub.log_tail('validator')}\n"
        f"projector log:\n{hub.log_tail('projector')}")

    letters = _dead_letters(kafka, topics)
    assert len(letters) == 1, [dict(letter.headers).get("lead.reason") for letter in letters]
    headers = dict(letters[0].headers)
    assert headers["lead.reason"] == bad["expected_reason"].encode()
    assert headers["lead.source.topic"] == inbound.encode()
    assert (int(headers["lead.source.partition"]), int(headers["lead.source.offset"])) == (
        bad["partition"], bad["offset"])
    assert letters[0].value == bad_record.value
    assert bad["event_id"].encode() in bad_record.value
