"""Export and offline verification over a real transactional log; tampering is caught.

``lead.events`` is written in Kafka transactions, as the validator writes it, with aborted
transactions at its start and in the middle of the window: the log's offsets have gaps (commit
and abort markers, aborted records), and the trees' leaves are the committed records. One
exported bundle (anchored on an earlier checkpoint, so it carries a prefix frontier, with a
checkpoint in the middle) is verified, then copies of it are tampered with: a flipped byte, a
dropped event, a reordered pair, an inserted event, an offset moved into a gap, renumbered
leaves, doctored manifest offsets, a forged checkpoint, another key. Each must fail, naming the
offset, leaf (or checkpoint) where it was altered. Last, the export has the files and manifest
fields of the synthetic bundle (tests/consumers/audit/test_audit_bundle_seal.py), and every
case of those tests fails on it too, naming the file or field.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.audit.bundle_format import MANIFEST_FILE
from consumers.audit.bundle_read import read_bundle_and_verify
from consumers.audit.bundle_seal import field_digests, inventory
from consumers.audit.checkpoints import Checkpoint, Head, sign_checkpoint
from consumers.audit.kafka_log import TopicReader
from schemas.canonical import CanonicalRecord, decode_canonical, encode_canonical
from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import new_participant_id
from tests.synthetic_bundle import (
    FIELDS,
    FILES,
    T0,
    b64,
    edit_manifest,
    field_value,
    fields_named,
    files_named,
    flip_byte,
)

CATALOG = load_catalog()
PARTITIONS = 4
WINDOW = T0 + timedelta(days=1)


def _record(i: int, received_at: datetime, partner: str) -> tuple[int, bytes, bytes]:
    participant = new_participant_id()
    event = Event(event_id=str(uuid.uuid4()), type="ContactLogged",
                  participant_id=participant, occurred_at=T0 + timedelta(minutes=i),
                  payload={"contact_method": "OUTREACH", "successful": True})
    value = encode_canonical(CanonicalRecord(
        kind="EVENT", received_at=received_at, source_partner=partner,
        ingest_topic=f"lead.in.{partner}", ingest_partition=0, ingest_offset=i,
        event=encode(event, CATALOG)))
    return i % PARTITIONS, participant.encode(), value


class _Log:
    """Writes lead.events in transactions, one per call, spread over every partition."""

    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.count = 0
        self.producer = KafkaProducer(**kafka.client_options(), acks="all",
                                      transactional_id=f"audit-test-{uuid.uuid4().hex}")
        self.producer.init_transactions()
        self.committed = TopicReader(kafka, topic)
        self.uncommitted = TopicReader(kafka, topic, isolation_level="read_uncommitted")

    def transaction(self, n: int, received_at: datetime, *, commit: bool = True) -> None:
        producer = self.producer
        producer.begin_transaction()
        futures = []
        for _ in range(n):
            partition, key, value = _record(
                self.count, received_at, "harbor-cm" if commit else "rolled-back")
            futures.append(producer.send(self.topic, key=key, value=value,
                                         partition=partition))
            self.count += 1
        producer.flush()
        for future in futures:
            future.get(timeout=30)  # the records took their offsets, aborted or not
        if commit:
            producer.commit_transaction()
        else:
            producer.abort_transaction()

    def settle(self) -> None:
        """Wait until every transaction's markers are written: the last stable offsets (what
        the checkpointer covers) reach the high watermarks. ``commit_transaction`` returns once
        the coordinator decided, which can be before the markers land."""
        deadline = time.monotonic() + 30
        while self.committed.end_offsets() != self.uncommitted.end_offsets():
            assert time.monotonic() < deadline, "transaction markers did not land in 30 s"
            time.sleep(0.05)

    def close(self) -> None:
        self.producer.close()
        self.committed.close()
        self.uncommitted.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: Any, kafka: KafkaConnection) -> Iterator[tuple[Path, str]]:
    """A verified bundle and the key id, made once for every tamper test."""
    from tests.conftest import HubProcesses, _delete_prefix

    topics = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    hub = HubProcesses(kafka, topics, tmp_path_factory.mktemp("hub"))
    try:
        assert hub.leadhub("topics", "create").returncode == 0
        keygen = hub.leadhub("audit", "keygen")
        assert keygen.returncode == 0, keygen.stderr
        kid = keygen.stdout.split()[2]
        log = _Log(kafka, topics.events)
        try:
            log.transaction(8, T0, commit=False)  # the trees start on aborted offsets
            log.transaction(12, T0)
            log.settle()
            checkpoint = hub.leadhub("audit", "checkpoint", "--once")
            assert checkpoint.returncode == 0, checkpoint.stderr
            log.transaction(8, WINDOW)
            log.transaction(8, WINDOW, commit=False)  # in the middle of the window
            log.transaction(8, WINDOW + timedelta(minutes=1))
            log.settle()
            checkpoint = hub.leadhub("audit", "checkpoint", "--once")
            assert checkpoint.returncode == 0, checkpoint.stderr
            log.transaction(4, WINDOW + timedelta(minutes=2), commit=False)
            log.transaction(8, WINDOW + timedelta(minutes=2))
            log.settle()
            checkpoint = hub.leadhub("audit", "checkpoint", "--once")
            assert checkpoint.returncode == 0, checkpoint.stderr
        finally:
            log.close()
        bundle = tmp_path_factory.mktemp("bundle") / "b"
        export = hub.leadhub("audit", "export", "--from", WINDOW.isoformat(),
                             "--to", (WINDOW + timedelta(hours=1)).isoformat(), str(bundle))
        assert export.returncode == 0, export.stderr
        assert "exported 24 records" in export.stdout
        verify = hub.leadhub("audit", "verify", str(bundle), "--key-id", kid)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        hub.stop_all()
    yield bundle, kid
    _delete_prefix(kafka, topics.prefix)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def _lines(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]


def _write(bundle: Path, lines: list[dict[str, Any]]) -> None:
    (bundle / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def _first(bundle: Path, kid: str) -> tuple[int | None, int | None, int | None, str]:
    report = read_bundle_and_verify(bundle, expected_key_id=kid)
    assert not report.ok
    assert report.first is not None
    f = report.first
    return f.partition, f.offset, f.checkpoint, f.reason


def _pick(lines: list[dict[str, Any]], *, gap_before: bool = False) -> int:
    """Index of a record in the middle of a partition, between two records of that partition
    (with ``gap_before``, offsets missing between it and its predecessor)."""
    for i in range(len(lines) // 2, len(lines) - 1):
        if lines[i - 1]["partition"] == lines[i]["partition"] == lines[i + 1]["partition"] and (
                not gap_before or lines[i]["offset"] - lines[i - 1]["offset"] > 1):
            return i
    raise AssertionError("no such record in the bundle")


@pytest.mark.integration
def test_bundle_is_anchored_gapped_and_verifies(exported: tuple[Path, str]) -> None:
    bundle, kid = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["anchored"]
    spans = manifest["partitions"].values()
    # 3 committed records per partition before the anchor, behind 2 aborted ones and 2 markers
    assert all(s["start"] == 3 and s["start_offset"] == 7 and s["frontier"] for s in spans)
    assert all(s["end"] - s["start"] == 6 and s["end_offset"] - s["start_offset"] == 14
               for s in spans)
    assert (bundle / "schemas" / "CanonicalRecord.avsc").exists()
    lines = _lines(bundle)
    for p in range(PARTITIONS):
        mine = [x for x in lines if x["partition"] == p]
        assert [x["leaf"] for x in mine] == list(range(3, 9))
        steps = [b["offset"] - a["offset"] for a, b in itertools.pairwise(mine)]
        assert max(steps) == 5  # commit marker, 2 aborted records, abort marker
    assert not [x for x in lines if decode_canonical(
        base64.b64decode(x["value"])).source_partner == "rolled-back"]
    report = read_bundle_and_verify(bundle, expected_key_id=kid)
    assert report.ok, [f.describe() for f in report.failures]
    assert report.records == len(lines) == sum(s["end"] - s["start"] for s in spans) == 24
    assert report.checkpoints == 3


@pytest.mark.integration
def test_flipped_byte_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    value = bytearray(base64.b64decode(lines[i]["value"]))
    value[len(value) // 2] ^= 0x01
    lines[i]["value"] = b64(bytes(value))
    _write(bundle, lines)
    partition, offset, _, reason = _first(bundle, exported[1])
    assert (partition, offset) == (lines[i]["partition"], lines[i]["offset"])
    assert "not in the signed tree" in reason


@pytest.mark.integration
def test_dropped_event_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    dropped = lines.pop(i)
    _write(bundle, lines)
    report = read_bundle_and_verify(bundle, expected_key_id=exported[1])
    assert report.first is not None
    f = report.first
    assert (f.partition, f.leaf, f.offset) == (dropped["partition"], dropped["leaf"], None)
    assert "missing" in f.reason
    assert f"[{lines[i - 1]['offset'] + 1}, {lines[i]['offset']})" in f.reason


@pytest.mark.integration
def test_renumbered_leaves_do_not_hide_a_dropped_event(exported: tuple[Path, str],
                                                       tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    dropped = lines.pop(i)
    for line in lines[i:]:
        if line["partition"] == dropped["partition"]:
            line["leaf"] -= 1
    _write(bundle, lines)
    partition, offset, _, reason = _first(bundle, exported[1])
    assert (partition, offset) == (lines[i]["partition"], lines[i]["offset"])
    assert "not in the signed tree" in reason


@pytest.mark.integration
def test_reordered_pair_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    _write(bundle, lines)
    report = read_bundle_and_verify(bundle, expected_key_id=exported[1])
    assert report.first is not None
    assert (report.first.partition, report.first.leaf) == (lines[i + 1]["partition"],
                                                           lines[i + 1]["leaf"])
    assert "out of order" in report.first.reason


@pytest.mark.integration
def test_inserted_event_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    forged = dict(lines[i], value=b64(b"\xc3\x01forged"))
    lines.insert(i, forged)
    _write(bundle, lines)
    partition, offset, _, reason = _first(bundle, exported[1])
    assert (partition, offset) == (forged["partition"], forged["offset"])
    assert "not in the signed tree" in reason


@pytest.mark.integration
def test_offset_moved_into_a_gap_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines, gap_before=True)
    lines[i]["offset"] -= 1  # where a marker or an aborted record sits
    _write(bundle, lines)
    partition, offset, _, reason = _first(bundle, exported[1])
    assert (partition, offset) == (lines[i]["partition"], lines[i]["offset"])
    assert "not in the signed tree" in reason


@pytest.mark.integration
@pytest.mark.parametrize(("field", "reason"), [("start_offset", "anchor checkpoint"),
                                               ("end_offset", "covering checkpoint")])
def test_doctored_manifest_offsets_are_named(exported: tuple[Path, str], tmp_path: Path,
                                             field: str, reason: str) -> None:
    bundle = _copy(exported[0], tmp_path)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["partitions"]["2"][field] += 1
    path.write_text(json.dumps(manifest))
    partition, offset, _, found = _first(bundle, exported[1])
    assert (partition, offset) == (2, None)
    assert reason in found


@pytest.mark.integration
@pytest.mark.parametrize("moved", ["size", "end_offset"])
def test_forged_checkpoint_is_named(exported: tuple[Path, str], tmp_path: Path,
                                    moved: str) -> None:
    bundle = _copy(exported[0], tmp_path)
    path = bundle / "checkpoints.jsonl"
    checkpoints = [json.loads(x) for x in path.read_text().splitlines()]
    cp = Checkpoint.from_json(checkpoints[1])
    heads = tuple(Head(h.partition, h.end_offset + (h.partition == 0 and moved == "end_offset"),
                       h.size + (h.partition == 0 and moved == "size"), h.root)
                  for h in cp.heads)
    forged = Checkpoint(cp.topic, cp.timestamp, heads, cp.key_id, cp.signature).to_json()
    checkpoints[1] = forged
    path.write_text("".join(json.dumps(c) + "\n" for c in checkpoints))
    partition, offset, checkpoint, reason = _first(bundle, exported[1])
    assert (partition, offset, checkpoint) == (None, None, 1)
    assert "signature" in reason


@pytest.mark.integration
def test_checkpoint_signed_by_another_key_is_refused(exported: tuple[Path, str],
                                                     tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    path = bundle / "checkpoints.jsonl"
    checkpoints = [json.loads(x) for x in path.read_text().splitlines()]
    cp = Checkpoint.from_json(checkpoints[1])
    rogue = sign_checkpoint(Ed25519PrivateKey.generate(), cp.topic, datetime.now(UTC),
                            cp.heads)
    checkpoints[1] = rogue.to_json()
    path.write_text("".join(json.dumps(c) + "\n" for c in checkpoints))
    assert _first(bundle, exported[1])[2] == 1


@pytest.mark.integration
def test_verify_cli_names_the_missing_leaf(exported: tuple[Path, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    dropped = lines.pop(i)
    _write(bundle, lines)
    done = subprocess.run([sys.executable, "-m", "leadhub.cli", "audit", "verify", str(bundle)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert (f"FAILED: partition {dropped['partition']} leaf #{dropped['leaf']}: missing"
            in done.stdout)


@pytest.mark.integration
def test_every_file_and_field_of_an_export_is_sealed(exported: tuple[Path, str],
                                                     tmp_path: Path) -> None:
    """The real export has the files and fields the synthetic cases cover, and every case
    fails on it too, naming the file or field."""
    bundle, kid = exported
    files, strays = inventory(bundle)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert not strays and sorted(files) == FILES

    def shape(paths: Any) -> list[str]:
        return sorted({re.sub(r"^partitions\.\d+", "partitions.N", p) for p in paths})

    fields = sorted(field_digests(manifest))
    assert shape(fields) == shape(FIELDS)
    escaped: list[str] = []
    cases = ([(path, "flip") for path in files] + [(path, "unlink") for path in files]
             + [(f, "change") for f in fields if not isinstance(field_value(manifest, f), dict)]
             + [(f, "remove") for f in fields])
    for n, (path, how) in enumerate(cases):
        copy = tmp_path / f"case-{n}"
        shutil.copytree(bundle, copy)
        if how == "flip":
            flip_byte(copy / path, "middle")
        elif how == "unlink":
            (copy / path).unlink()
        else:
            edit_manifest(copy, path, how)
        report = read_bundle_and_verify(copy, expected_key_id=kid)
        named = fields_named(report) if how in ("change", "remove") else files_named(report)
        if report.ok or path not in named:
            escaped.append(f"{how} {path}: {[f.describe() for f in report.failures]}")
        shutil.rmtree(copy)
    assert escaped == []
