"""Checkpoints, export and offline verification on the real broker; tampering is caught.

One exported bundle (anchored on an earlier checkpoint, so it carries a prefix frontier) is
verified, then copies of it are tampered with: a flipped byte, a dropped event, a reordered
pair, an inserted event, a forged checkpoint, another key. Each must fail, naming the offset
(or checkpoint) where it was altered.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.audit.bundle import read_bundle_and_verify
from consumers.audit.checkpoints import Checkpoint, Head, sign_checkpoint
from consumers.audit.kafka_log import TopicReader
from producers.sdk import PartnerPublisher
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.topics import TopicNames

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def _contacts(n: int) -> list[Event]:
    return [Event(event_id=str(uuid.uuid4()), type="ContactLogged",
                  participant_id=f"P-{i % 7}-{uuid.uuid4().hex[:4]}",
                  occurred_at=T0 + timedelta(minutes=i),
                  payload={"contact_method": "OUTREACH", "successful": True})
            for i in range(n)]


def _publish_and_wait(bootstrap: str, topics: TopicNames, events: list[Event],
                      total: int) -> None:
    with PartnerPublisher("harbor-cm", bootstrap, catalog=CATALOG, topics=topics) as pub:
        pub.publish_many(events)
    with TopicReader(bootstrap, topics.events) as reader:
        deadline = time.monotonic() + 60
        while sum(reader.end_offsets().values()) < total:
            assert time.monotonic() < deadline, "validator did not pass the events on"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: Any, kafka_bootstrap: str) -> tuple[Path, str]:
    """A verified bundle and the key id, made once for every tamper test."""
    from tests.conftest import HubProcesses

    topics = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    hub = HubProcesses(kafka_bootstrap, topics, tmp_path_factory.mktemp("hub"))
    try:
        assert hub.leadhub("topics", "create").returncode == 0
        hub.start("validator")
        keygen = hub.leadhub("audit", "keygen")
        assert keygen.returncode == 0, keygen.stderr
        kid = keygen.stdout.split()[2]
        _publish_and_wait(kafka_bootstrap, topics, _contacts(12), 12)
        first = hub.leadhub("audit", "checkpoint", "--once")
        assert first.returncode == 0, first.stderr
        time.sleep(1.1)
        window_from = datetime.now(UTC)
        _publish_and_wait(kafka_bootstrap, topics, _contacts(20), 32)
        second = hub.leadhub("audit", "checkpoint", "--once")
        assert second.returncode == 0, second.stderr
        bundle = tmp_path_factory.mktemp("bundle") / "b"
        export = hub.leadhub("audit", "export", "--from", window_from.isoformat(),
                             "--to", datetime.now(UTC).isoformat(), str(bundle))
        assert export.returncode == 0, export.stderr
        verify = hub.leadhub("audit", "verify", str(bundle), "--key-id", kid)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        hub.stop_all()
    return bundle, kid


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


def _pick(lines: list[dict[str, Any]]) -> int:
    """Index of a record in the middle of a partition with a successor in that partition."""
    for i in range(len(lines) // 2, len(lines) - 1):
        if lines[i]["partition"] == lines[i + 1]["partition"]:
            return i
    raise AssertionError("no two records of one partition in the bundle")


def test_bundle_is_anchored_and_verifies(exported: tuple[Path, str]) -> None:
    bundle, kid = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["anchored"]
    assert any(s["start"] > 0 and s["frontier"] for s in manifest["partitions"].values())
    assert (bundle / "schemas" / "CanonicalRecord.avsc").exists()
    report = read_bundle_and_verify(bundle, expected_key_id=kid)
    assert report.ok, [f.describe() for f in report.failures]
    assert report.records == sum(s["end"] - s["start"] for s in manifest["partitions"].values())
    assert report.checkpoints == 2


def test_flipped_byte_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    value = bytearray(base64.b64decode(lines[i]["value"]))
    value[len(value) // 2] ^= 0x01
    lines[i]["value"] = base64.b64encode(bytes(value)).decode()
    _write(bundle, lines)
    partition, offset, _, reason = _first(bundle, exported[1])
    assert (partition, offset) == (lines[i]["partition"], lines[i]["offset"])
    assert "not in the signed tree" in reason


def test_dropped_event_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    dropped = lines.pop(i)
    _write(bundle, lines)
    partition, offset, _, reason = _first(bundle, exported[1])
    assert (partition, offset) == (dropped["partition"], dropped["offset"])
    assert "missing" in reason


def test_reordered_pair_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    _write(bundle, lines)
    partition, offset, _, _ = _first(bundle, exported[1])
    assert (partition, offset) == (lines[i + 1]["partition"], lines[i + 1]["offset"])


def test_inserted_event_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    lines = _lines(bundle)
    i = _pick(lines)
    forged = dict(lines[i], value=base64.b64encode(b"\xc3\x01forged").decode())
    lines.insert(i, forged)
    _write(bundle, lines)
    partition, offset, _, reason = _first(bundle, exported[1])
    assert (partition, offset) == (forged["partition"], forged["offset"])
    assert "not in the signed tree" in reason


def test_forged_checkpoint_is_named(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    path = bundle / "checkpoints.jsonl"
    checkpoints = [json.loads(x) for x in path.read_text().splitlines()]
    cp = Checkpoint.from_json(checkpoints[1])
    heads = tuple(Head(h.partition, h.size + 1 if h.partition == 0 else h.size, h.root)
                  for h in cp.heads)
    forged = Checkpoint(cp.topic, cp.timestamp, heads, cp.key_id, cp.signature).to_json()
    checkpoints[1] = forged
    path.write_text("".join(json.dumps(c) + "\n" for c in checkpoints))
    partition, offset, checkpoint, reason = _first(bundle, exported[1])
    assert (partition, offset, checkpoint) == (None, None, 1)
    assert "signature" in reason


def test_checkpoint_signed_by_another_key_is_refused(exported: tuple[Path, str],
                                                     tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    bundle = _copy(exported[0], tmp_path)
    path = bundle / "checkpoints.jsonl"
    checkpoints = [json.loads(x) for x in path.read_text().splitlines()]
    cp = Checkpoint.from_json(checkpoints[1])
    rogue = sign_checkpoint(Ed25519PrivateKey.generate(), cp.topic, datetime.now(UTC),
                            cp.heads)
    checkpoints[1] = rogue.to_json()
    path.write_text("".join(json.dumps(c) + "\n" for c in checkpoints))
    assert _first(bundle, exported[1])[2] == 1


def test_verify_cli_names_the_offset(exported: tuple[Path, str], tmp_path: Path) -> None:
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
    assert (f"FAILED: partition {dropped['partition']} offset {dropped['offset']}: missing"
            in done.stdout)
