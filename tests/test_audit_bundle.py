"""Checkpoints, export and offline verification over a transactional log; tampering is caught.

``lead.events`` is written in Kafka transactions, as the validator writes it, with aborted
transactions at its start and in the middle of the window: the log's offsets have gaps (commit
and abort markers, aborted records), and the trees' leaves are the committed records. One
exported bundle (anchored on an earlier checkpoint, so it carries a prefix frontier, with a
checkpoint in the middle) is verified, then copies of it are tampered with: a flipped byte, a
dropped event, a reordered pair, an inserted event, an offset moved into a gap, renumbered leaves,
doctored manifest offsets, a forged checkpoint, another key. Each must fail, naming the offset,
leaf (or checkpoint) where it was altered.

Byte for byte: a bundle written by the exporter's own writer (:func:`finish_bundle`) from a
synthetic log has a byte flipped in each of its files, each file removed, files added, and each
manifest field changed, removed or added; each must fail naming that file or field. The cases
are generated from the files and manifest fields such a bundle actually has, so a file or field
added to the format is tested without anyone listing it; a broker test checks that a real
export has the same files and fields and runs every case on it too.

The first tests need no broker: a synthetic gapped log checks the verifier's offset rules.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.audit.bundle import (
    EVENTS_FILE,
    MANIFEST_FILE,
    SEAL_FILE,
    Report,
    bundle_manifest,
    event_line,
    field_digests,
    finish_bundle,
    inventory,
    read_bundle_and_verify,
    schema_files,
    seal_bytes,
    verify_bundle,
)
from consumers.audit.checkpoints import (
    Checkpoint,
    Head,
    key_id,
    public_bytes,
    record_leaf_hash,
    sign_checkpoint,
    signature_valid,
)
from consumers.audit.errors import CheckpointError
from consumers.audit.kafka_log import TopicReader
from consumers.audit.merkle import LeafHashes
from schemas.canonical import CanonicalRecord, decode_canonical, encode_canonical
from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import new_participant_id

CATALOG = load_catalog()
T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
PARTITIONS = 4


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the verifier on a synthetic gapped log (no broker) ---------------------------------------

TOPIC = "t.lead.events"
#: committed offsets per partition: partition 0 starts with an aborted record (offset 0), every
#: transaction ends in a marker, 7-8 and 12-13 are aborted records and their marker
OFFSETS = {0: [1, 2, 3, 5, 6, 9, 10, 11, 14, 15], 1: [0, 4, 8, 16]}
#: the checkpoints' end offsets: anchor, one in the middle, covering
CUTS = [{0: 4, 1: 2}, {0: 8, 1: 6}, {0: 17, 1: 17}]


def _value(p: int, offset: int) -> bytes:
    return f"value {p}/{offset}".encode()


def _synthetic(cuts: list[dict[int, int]] = CUTS,
               lie: dict[tuple[int, int], int] | None = None,
               key: Ed25519PrivateKey | None = None) -> tuple[Any, ...]:
    """(manifest, checkpoints, events, public key) of an honest export of ``OFFSETS``;
    ``lie`` replaces the end offset that checkpoint ``i`` signs for partition ``p``."""
    key = key or Ed25519PrivateKey.generate()
    trees = {p: LeafHashes(record_leaf_hash(TOPIC, p, o, None, _value(p, o)) for o in offs)
             for p, offs in OFFSETS.items()}
    signed = []
    for i, cut in enumerate(cuts):
        heads = []
        for p, offs in OFFSETS.items():
            size = sum(1 for o in offs if o < cut[p])
            heads.append(Head(p, (lie or {}).get((i, p), cut[p]), size, trees[p].root(size)))
        signed.append(sign_checkpoint(key, TOPIC, T0 + timedelta(minutes=i), heads))
    anchor, covering = signed[0], signed[-1]
    partitions, events = {}, []
    for p, offs in OFFSETS.items():
        start, end = anchor.sizes()[p], covering.sizes()[p]
        partitions[str(p)] = {"start": start, "end": end, "start_offset": cuts[0][p],
                              "end_offset": cuts[-1][p],
                              "frontier": [h.hex() for h in trees[p].frontier(start)]}
        events += [{"partition": p, "offset": offs[leaf], "leaf": leaf, "key": None,
                    "value": _b64(_value(p, offs[leaf])),
                    "proof": [h.hex() for h in trees[p].inclusion_proof(leaf, end)]}
                   for leaf in range(start, end)]
    consistency = [{"partition": p, "from": i, "to": i + 1,
                    "proof": [h.hex() for h in trees[p].consistency_proof(
                        signed[i].sizes()[p], signed[i + 1].sizes()[p])]}
                   for i in range(len(signed) - 1) for p in OFFSETS]
    public = public_bytes(key.public_key())
    manifest = bundle_manifest(TOPIC, key_id(public), (T0, T0 + timedelta(hours=1)),
                               T0 + timedelta(hours=2), True,
                               {int(p): span for p, span in partitions.items()}, consistency)
    return manifest, [c.to_json() for c in signed], events, public


def _verify(manifest: Any, checkpoints: Any, events: Any, public: bytes) -> Report:
    return verify_bundle(manifest, checkpoints, events, public)


def test_a_gapped_log_verifies_by_leaf_index() -> None:
    manifest, checkpoints, events, public = _synthetic()
    report = _verify(manifest, checkpoints, events, public)
    assert report.ok, [f.describe() for f in report.failures]
    assert report.records == len(events) == 10 and report.checkpoints == 3
    assert manifest["partitions"]["0"]["start"] == 3  # offsets 1, 2, 3 before end offset 4


def test_a_missing_record_is_named_by_leaf_and_offset_range() -> None:
    manifest, checkpoints, events, public = _synthetic()
    last = [e for e in events if e["partition"] == 1][-1]  # leaf #3, offset 16
    report = _verify(manifest, checkpoints, [e for e in events if e is not last], public)
    assert report.first is not None
    assert (report.first.partition, report.first.leaf, report.first.offset) == (1, 3, None)
    assert "missing" in report.first.reason and "[9, 17)" in report.first.reason


def test_a_checkpoint_whose_end_offset_contradicts_its_leaves_fails() -> None:
    # checkpoint #1 holds offsets 1..6 of partition 0 (5 leaves) yet claims to end at 6
    manifest, checkpoints, events, public = _synthetic(lie={(1, 0): 6})
    report = _verify(manifest, checkpoints, events, public)
    assert report.first is not None
    assert (report.first.partition, report.first.offset) == (0, 6)
    assert "checkpoint #1" in report.first.reason
    # ... or claims to end at 10, past the leaf at offset 9 that it does not hold
    manifest, checkpoints, events, public = _synthetic(lie={(1, 0): 10})
    report = _verify(manifest, checkpoints, events, public)
    assert report.first is not None
    assert (report.first.partition, report.first.offset) == (0, 9)
    assert "below that offset" in report.first.reason


def test_end_offsets_never_go_back() -> None:
    manifest, checkpoints, events, public = _synthetic(
        cuts=[CUTS[0], {0: 8, 1: 15}, {0: 17, 1: 12}])
    report = _verify(manifest, checkpoints, events, public)
    assert report.first is not None and report.first.checkpoint == 2
    assert "end offsets 15 -> 12" in report.first.reason


def test_the_end_offset_is_signed_and_format_1_is_refused() -> None:
    _, checkpoints, _, public = _synthetic()
    cp = Checkpoint.from_json(checkpoints[1])
    assert signature_valid(cp, public)
    moved = tuple(Head(h.partition, h.end_offset + 1, h.size, h.root) for h in cp.heads)
    assert not signature_valid(Checkpoint(cp.topic, cp.timestamp, moved, cp.key_id,
                                          cp.signature), public)
    old = dict(checkpoints[1], format="leadhub-checkpoint/1")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        Checkpoint.from_json(old)


# -- byte for byte: the seal over every file and manifest field (no broker) -------------------

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas" / "avro"
VERIFY_CLI = [sys.executable, "-m", "leadhub.cli", "audit", "verify"]


def _write_synthetic(directory: Path, key: Ed25519PrivateKey | None = None) -> Path:
    """A bundle of ``OFFSETS`` written by the exporter's own writer; returns ``directory``."""
    key = key or Ed25519PrivateKey.generate()
    manifest, checkpoints, events, _ = _synthetic(key=key)
    directory.mkdir(parents=True)
    (directory / EVENTS_FILE).write_text("".join(
        event_line(e["partition"], e["offset"], e["leaf"], None, base64.b64decode(e["value"]),
                   [bytes.fromhex(h) for h in e["proof"]]) for e in events))
    finish_bundle(directory, key, manifest, [Checkpoint.from_json(c) for c in checkpoints],
                  schema_files(SCHEMAS_DIR))
    return directory


def _at(manifest: Any, path: str) -> Any:
    for name in path.split("."):
        manifest = manifest[name]
    return manifest


def _layout() -> tuple[list[str], list[str], list[str]]:
    """(files, manifest field paths, the paths whose value is not an object) of a bundle as the
    exporter's writer makes it: what the parametrized cases below are generated from."""
    with tempfile.TemporaryDirectory(prefix="leadhub-bundle-layout-") as tmp:
        bundle = _write_synthetic(Path(tmp) / "bundle")
        files, strays = inventory(bundle)
        manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert not strays
    fields = sorted(field_digests(manifest))
    return sorted(files), fields, [f for f in fields if not isinstance(_at(manifest, f), dict)]


FILES, FIELDS, LEAF_FIELDS = _layout()


def _flip(path: Path, where: str) -> None:
    """Flip the low bit of the file's first, middle or last byte."""
    data = bytearray(path.read_bytes())
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def _changed(value: Any) -> Any:
    """Another value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "0"
    if isinstance(value, list):
        return [*value, value[0]] if value else [0]
    return "changed"


def _edit_manifest(bundle: Path, path: str, how: str) -> None:
    """``change`` the value at ``path``, ``remove`` it or ``add`` it (a new field)."""
    target = bundle / MANIFEST_FILE
    manifest = json.loads(target.read_text())
    *parents, name = path.split(".")
    holder = _at(manifest, ".".join(parents)) if parents else manifest
    if how == "change":
        holder[name] = _changed(holder[name])
    elif how == "remove":
        del holder[name]
    else:
        assert name not in holder
        holder[name] = "added"
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True))  # as the writer does


def _named(report: Report) -> set[str]:
    return {f.file for f in report.failures if f.file is not None}


def _fields_named(report: Report) -> set[str]:
    return {f.field for f in report.failures if f.field is not None}


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    """A fresh synthetic bundle, written and sealed by the exporter's writer."""
    return _write_synthetic(tmp_path / "bundle")


def test_an_untouched_sealed_bundle_verifies(sealed: Path) -> None:
    report = read_bundle_and_verify(sealed)
    assert report.ok, [f.describe() for f in report.failures]
    assert report.records == 10 and report.checkpoints == 3
    assert SEAL_FILE in FILES and MANIFEST_FILE in FILES
    assert any(f.startswith("schemas/") for f in FILES)
    assert {"window.from", "window.to", "exported_at"} <= set(LEAF_FIELDS)
    done = subprocess.run([*VERIFY_CLI, str(sealed)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("verified: 10 records, 3 signed checkpoints, every file")


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("path", FILES)
def test_a_flipped_byte_in_any_file_is_named(sealed: Path, path: str, where: str) -> None:
    _flip(sealed / path, where)
    report = read_bundle_and_verify(sealed)
    failures = [f.describe() for f in report.failures]
    assert not report.ok
    assert path in _named(report), failures
    # nothing else is blamed (a changed key file also makes the seal's key a stranger)
    assert _named(report) <= {path, SEAL_FILE}, failures
    assert any(line.startswith(f"{path}: ") or line.startswith(f"{path} field ")
               for line in failures), failures


@pytest.mark.parametrize("path", FILES)
def test_a_missing_file_is_named(sealed: Path, path: str) -> None:
    (sealed / path).unlink()
    report = read_bundle_and_verify(sealed)
    assert any(f.file == path and f.reason.startswith("missing") for f in report.failures), [
        f.describe() for f in report.failures]


@pytest.mark.parametrize("extra", ["extra.txt", "schemas/Extra.avsc", "deeper/still/x.json",
                                   "link", "empty/"])
def test_an_unexpected_file_is_named(sealed: Path, extra: str) -> None:
    target = sealed / extra
    if extra == "link":
        target.symlink_to(sealed / EVENTS_FILE)
    elif extra.endswith("/"):
        target.mkdir()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")
    report = read_bundle_and_verify(sealed)
    assert [f.describe() for f in report.failures] == [f"{extra}: unexpected: " + (
        "a symbolic link" if extra == "link" else "an empty directory" if extra == "empty/"
        else "the seal does not list this file")]


CHANGES = ([(f, "change") for f in LEAF_FIELDS] + [(f, "remove") for f in FIELDS]
           + [(f, "add") for f in ("note", "window.note", "partitions.7")])


@pytest.mark.parametrize(("path", "how"), CHANGES)
def test_a_changed_manifest_field_is_named(sealed: Path, path: str, how: str) -> None:
    _edit_manifest(sealed, path, how)
    report = read_bundle_and_verify(sealed)
    failures = [f.describe() for f in report.failures]
    assert _fields_named(report) == {path}, failures
    reason = {"change": "changed", "remove": "removed", "add": "added"}[how]
    assert any(line.startswith(f"manifest.json field {path!r}: {reason}")
               for line in failures), failures
    assert _named(report) == {MANIFEST_FILE}, failures


def test_a_moved_window_fails_in_the_cli_with_exit_1(sealed: Path) -> None:
    path = sealed / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["window"]["from"] = (T0 - timedelta(days=30)).isoformat()
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    done = subprocess.run([*VERIFY_CLI, str(sealed), "--json"], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert not result["ok"]
    assert result["first_failure"]["field"] == "window.from"
    assert result["failures"] == ["manifest.json field 'window.from': changed: not the value "
                                  "the hub sealed"]


def test_a_reformatted_manifest_is_named(sealed: Path) -> None:
    path = sealed / MANIFEST_FILE
    path.write_text(json.dumps(json.loads(path.read_text())))
    report = read_bundle_and_verify(sealed)
    assert [f.describe() for f in report.failures] == [
        f for f in (f.describe() for f in report.failures) if f.startswith("manifest.json: ")]
    assert report.first is not None and "reformatted" in report.first.reason


def test_a_seal_of_another_key_is_named(sealed: Path) -> None:
    files, _ = inventory(sealed)
    del files[SEAL_FILE]
    manifest = json.loads((sealed / MANIFEST_FILE).read_text())
    (sealed / SEAL_FILE).write_bytes(seal_bytes(Ed25519PrivateKey.generate(), manifest, files))
    report = read_bundle_and_verify(sealed)
    assert len(report.failures) == 1 and report.first is not None
    assert report.first.file == SEAL_FILE and report.first.reason.startswith("sealed by key")


def test_a_format_2_bundle_is_refused_with_advice(sealed: Path) -> None:
    path = sealed / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["format"] = "leadhub-audit-bundle/2"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (sealed / SEAL_FILE).unlink()
    report = read_bundle_and_verify(sealed)
    assert report.first is not None
    assert report.first.describe().startswith("manifest.json field 'format': a format 2 bundle")
    assert "export the window again" in report.first.reason
    assert any(f.file == SEAL_FILE and f.reason.startswith("missing") for f in report.failures)


# -- the real broker: a transactional lead.events ---------------------------------------------

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
    lines[i]["value"] = _b64(bytes(value))
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
    forged = dict(lines[i], value=_b64(b"\xc3\x01forged"))
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
             + [(f, "change") for f in fields if not isinstance(_at(manifest, f), dict)]
             + [(f, "remove") for f in fields])
    for n, (path, how) in enumerate(cases):
        copy = tmp_path / f"case-{n}"
        shutil.copytree(bundle, copy)
        if how == "flip":
            _flip(copy / path, "middle")
        elif how == "unlink":
            (copy / path).unlink()
        else:
            _edit_manifest(copy, path, how)
        report = read_bundle_and_verify(copy, expected_key_id=kid)
        named = _fields_named(report) if how in ("change", "remove") else _named(report)
        if report.ok or path not in named:
            escaped.append(f"{how} {path}: {[f.describe() for f in report.failures]}")
        shutil.rmtree(copy)
    assert escaped == []
