"""Signed tree heads over ``lead.events``: the leaf encoding, Ed25519 checkpoints, the signer.

**Leaves.** One RFC 6962 tree per partition whose leaves are the partition's *committed*
records (as a ``read_committed`` consumer sees them) in offset order, from offset 0: leaf index
= the record's ordinal in its partition, not its offset. ``lead.events`` is written in Kafka
transactions, so offsets have gaps (every commit or abort marker takes one; records of aborted
transactions take theirs and are not leaves); it is never compacted. The leaf still commits to
the record's offset, so a verifier sees the offsets and checks that they increase. The leaf
bytes are::

    b"LHLEAF1"                               7 bytes, format tag
    u16 len(topic)  || topic (UTF-8)          the topic name, prefix included
    u32 partition
    u64 offset
    u32 len(key)    || key                    len 0xFFFFFFFF and no bytes for a null key
    u32 len(value)  || value                  the record's value bytes, as stored

(big-endian unsigned integers). Kafka timestamps and headers are not committed. The leaf hash
is ``SHA-256(0x00 || leaf)`` (:func:`consumers.audit.merkle.leaf_hash`). The leaf bytes are
those of format 1; what changed is how leaves are indexed and what a head says.

**Checkpoint** (JSON on ``lead.audit.checkpoints``, key ``checkpoint``)::

    {"format": "leadhub-checkpoint/2", "topic": ..., "timestamp": "...Z",
     "heads": [{"partition": 0, "end_offset": E, "size": N, "root": hex}, ...],
                          every partition, in order: the tree of the N committed records with
                          offset < E (E: the partition's last stable offset when it was read)
     "root": hex,         SHA-256 over (u32 partition || u64 end_offset || u64 size || root)
                          of every head
     "key_id": hex16,     first 8 bytes of SHA-256(raw Ed25519 public key), in hex
     "signature": base64  Ed25519 over b"leadhub-checkpoint/2\\n" + canonical JSON of the
                          checkpoint without "signature"}

A head says up to which offset (exclusive) it covers *and* how many leaves that is: with
gaps, neither follows from the other. Consistency between two checkpoints is between their
leaf counts; an inclusion proof addresses a leaf by its index, which a reader finds by counting
the committed records before it (or reads from a bundle, which stores it).

**Format 1** (``leadhub-checkpoint/1``: heads without ``end_offset``, leaf index = offset,
for a log written without transactions) is gone: such checkpoints do not parse
(:func:`read_checkpoints` counts them as malformed), do not verify, and are not resumed from;
the checkpointer starts a fresh series in format 2 from offset 0.

Pure here: encoding, hashing, signing and checking with keys passed in. The key files and the
Kafka-facing :class:`Checkpointer` are the adapters at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consumers.audit.digest import canonical_json
from consumers.audit.errors import CheckpointError, SetupError
from consumers.audit.merkle import HASH_SIZE, CompactTree, leaf_hash
from schemas.event import format_timestamp
from schemas.kafka_connection import KafkaConnection

if TYPE_CHECKING:
    from consumers.audit.kafka_log import TopicReader

LEAF_TAG = b"LHLEAF1"
CHECKPOINT_FORMAT = "leadhub-checkpoint/2"
_NULL_KEY = 0xFFFFFFFF


def encode_leaf(topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes) -> bytes:
    """The leaf bytes of one ``lead.events`` record (see the module doc)."""
    name = topic.encode()
    key_part = struct.pack(">I", _NULL_KEY) if key is None else (
        struct.pack(">I", len(key)) + key)
    return b"".join((LEAF_TAG, struct.pack(">H", len(name)), name,
                     struct.pack(">IQ", partition, offset), key_part,
                     struct.pack(">I", len(value)), value))


def record_leaf_hash(topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes) -> bytes:
    """``SHA-256(0x00 || encode_leaf(...))``."""
    return leaf_hash(encode_leaf(topic, partition, offset, key, value))


@dataclass(frozen=True)
class Head:
    """One partition's tree head: the ``size`` committed records with offset < ``end_offset``."""

    partition: int
    end_offset: int
    size: int
    root: bytes


def combined_root(heads: Sequence[Head]) -> bytes:
    """SHA-256 over ``u32 partition || u64 end_offset || u64 size || root`` of every head, in
    partition order."""
    hasher = hashlib.sha256()
    for head in sorted(heads, key=lambda h: h.partition):
        hasher.update(struct.pack(">IQQ", head.partition, head.end_offset, head.size)
                      + head.root)
    return hasher.digest()


def key_id(public_key: bytes) -> str:
    """The 16-hex-digit id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    """A signed set of tree heads (see the module doc for the JSON form)."""

    topic: str
    timestamp: str
    heads: tuple[Head, ...]
    key_id: str
    signature: bytes

    def head(self, partition: int) -> Head | None:
        """The head of ``partition``, or None if the checkpoint has none."""
        for head in self.heads:
            if head.partition == partition:
                return head
        return None

    def sizes(self) -> dict[int, int]:
        """Tree size (committed records covered) per partition."""
        return {h.partition: h.size for h in self.heads}

    def end_offsets(self) -> dict[int, int]:
        """Per partition, the offset (exclusive) up to which the tree covers the log."""
        return {h.partition: h.end_offset for h in self.heads}

    def to_json(self) -> dict[str, Any]:
        """The JSON object published and exported."""
        body = _body(self.topic, self.timestamp, self.heads, self.key_id)
        body["signature"] = base64.b64encode(self.signature).decode()
        return body

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Checkpoint:
        """Parse a checkpoint; raises CheckpointError if it is malformed (not: unsigned)."""
        try:
            if obj["format"] != CHECKPOINT_FORMAT:
                raise CheckpointError(f"unknown checkpoint format {obj['format']!r}")
            heads = tuple(Head(int(h["partition"]), int(h["end_offset"]), int(h["size"]),
                               bytes.fromhex(h["root"])) for h in obj["heads"])
            checkpoint = cls(str(obj["topic"]), str(obj["timestamp"]), heads,
                             str(obj["key_id"]), base64.b64decode(obj["signature"],
                                                                  validate=True))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed checkpoint ({type(exc).__name__})") from exc
        for head in heads:
            if not (0 <= head.partition < 1 << 32 and 0 <= head.size <= head.end_offset < 1 << 64
                    and len(head.root) == HASH_SIZE):
                raise CheckpointError(f"malformed head of partition {head.partition}")
        if str(obj.get("root")) != combined_root(heads).hex():
            raise CheckpointError("checkpoint's combined root does not match its heads")
        return checkpoint


def _body(topic: str, timestamp: str, heads: Sequence[Head], kid: str) -> dict[str, Any]:
    ordered = sorted(heads, key=lambda h: h.partition)
    return {"format": CHECKPOINT_FORMAT, "topic": topic, "timestamp": timestamp,
            "heads": [{"partition": h.partition, "end_offset": h.end_offset, "size": h.size,
                       "root": h.root.hex()} for h in ordered],
            "root": combined_root(ordered).hex(), "key_id": kid}


def signed_message(topic: str, timestamp: str, heads: Sequence[Head], kid: str) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return CHECKPOINT_FORMAT.encode() + b"\n" + canonical_json(_body(topic, timestamp, heads,
                                                                    kid))


def sign_checkpoint(private_key: Ed25519PrivateKey, topic: str, timestamp: datetime,
                    heads: Sequence[Head]) -> Checkpoint:
    """Sign ``heads`` of ``topic`` as of ``timestamp`` (tz-aware)."""
    stamp = format_timestamp(timestamp)
    kid = key_id(public_bytes(private_key.public_key()))
    ordered = tuple(sorted(heads, key=lambda h: h.partition))
    signature = private_key.sign(signed_message(topic, stamp, ordered, kid))
    return Checkpoint(topic, stamp, ordered, kid, signature)


def signature_valid(checkpoint: Checkpoint, public_key: bytes) -> bool:
    """True iff ``checkpoint`` was signed by the raw Ed25519 ``public_key`` and names it."""
    if checkpoint.key_id != key_id(public_key):
        return False
    message = signed_message(checkpoint.topic, checkpoint.timestamp, checkpoint.heads,
                             checkpoint.key_id)
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(checkpoint.signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an Ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(public_key: bytes) -> bytes:
    """PEM (SubjectPublicKeyInfo) of a raw Ed25519 public key."""
    return Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key_pem(data: bytes) -> bytes:
    """Raw 32 bytes from an Ed25519 public key PEM; CheckpointError if it is not one."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise CheckpointError("not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError("the public key is not an Ed25519 key")
    return public_bytes(key)


# -- adapters: key files, the checkpointer -------------------------------------------------

KEY_FILE = "checkpoint-signing.key"
PUBLIC_FILE = "checkpoint-signing.pub.pem"


def key_paths(state_dir: Path) -> tuple[Path, Path]:
    """(private key, public key) paths under the state directory's ``audit/``."""
    base = state_dir / "audit"
    return base / KEY_FILE, base / PUBLIC_FILE


def generate_key(state_dir: Path, *, force: bool = False) -> str:
    """Create the signing key pair once (private key mode 0600); return its key id.

    Raises SetupError if a key exists and ``force`` is not set: a new key would not verify
    the checkpoints already published.
    """
    private_path, public_path = key_paths(state_dir)
    if private_path.exists() and not force:
        raise SetupError(f"a signing key exists at {private_path}; keep it (checkpoints "
                         "already published verify only with it) or pass --force")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    raw = public_bytes(key.public_key())
    public_path.write_bytes(public_key_pem(raw))
    return key_id(raw)


def load_private_key(state_dir: Path) -> Ed25519PrivateKey:
    """The signing key; SetupError if missing (run ``leadhub audit keygen``)."""
    private_path, _ = key_paths(state_dir)
    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise SetupError(f"no signing key at {private_path}: run `leadhub audit keygen` "
                         "first") from exc
    except ValueError as exc:
        raise CheckpointError(f"the signing key at {private_path} is unreadable") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{private_path} is not an Ed25519 key")
    return key


def read_checkpoints(kafka: KafkaConnection, topic: str) -> tuple[list[Checkpoint], int]:
    """Every parsable checkpoint on ``topic``, oldest first, and how many were malformed."""
    from consumers.audit.kafka_log import TopicReader

    found: list[Checkpoint] = []
    malformed = 0
    with TopicReader(kafka, topic, client_id="leadhub-audit-checkpoints") as reader:
        for record in reader.read(reader.end_offsets()):
            try:
                found.append(Checkpoint.from_json(json.loads(record.value)))
            except (CheckpointError, ValueError):
                malformed += 1
    found.sort(key=lambda c: (c.timestamp, sum(c.end_offsets().values())))
    return found, malformed


def deleted_prefixes(reader: TopicReader) -> dict[int, int]:
    """Partitions of the reader's topic whose first records were deleted (retention, a
    deletion): partition -> first offset still in the log. The trees start at offset 0, so such
    a partition cannot be hashed; a gap at the start is otherwise indistinguishable from the
    offset gaps that transactions leave."""
    return {p: offset for p, offset in reader.beginning_offsets().items() if offset > 0}


class Checkpointer:
    """Keeps one compact tree per partition of ``lead.events`` and publishes signed heads.

    Memory: O(log n) hashes per partition. Reads ``read_committed``, up to the last stable
    offsets. On start it re-hashes the log from offset 0 and, if a checkpoint of its own key
    exists, checks that the log still has the leaf counts and roots that checkpoint signed up
    to its end offsets (raises CheckpointError naming the partition if not: the log was
    rewritten or truncated).
    """

    def __init__(self, kafka: KafkaConnection, events_topic: str, checkpoints_topic: str,
                 private_key: Ed25519PrivateKey) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        from consumers.audit.kafka_log import TopicReader

        self.kafka = kafka
        self.events_topic = events_topic
        self.checkpoints_topic = checkpoints_topic
        self.key = private_key
        self.public = public_bytes(private_key.public_key())
        self.reader = TopicReader(kafka, events_topic, client_id="leadhub-checkpointer")
        self.trees: dict[int, CompactTree] = {}
        #: Per partition, the offset (exclusive) up to which the tree has hashed the log.
        self.covered: dict[int, int] = {}
        try:
            self.producer = KafkaProducer(**kafka.client_options(), acks="all")
        except (KafkaError, OSError) as exc:
            raise CheckpointError(f"cannot reach Kafka at {kafka.describe()}") from exc
        self._checked_last = False

    def _advance(self, end: Mapping[int, int]) -> None:
        """Hash the committed records from each partition's covered offset up to ``end``."""
        topic = self.events_topic
        covered = self.covered
        for p, stop in end.items():
            self.trees.setdefault(p, CompactTree())
            if stop < covered.setdefault(p, 0):
                raise CheckpointError(
                    f"{topic} partition {p}: the end offset went back from {covered[p]} to "
                    f"{stop}: the log was truncated")
        start = dict(covered)
        for rec in self.reader.read(end, start):
            p = rec.partition
            if rec.offset < covered[p]:
                raise CheckpointError(f"{topic} partition {p}: offset {rec.offset} came after "
                                      f"offset {covered[p] - 1}; offsets must increase")
            self.trees[p].append(record_leaf_hash(topic, p, rec.offset, rec.key, rec.value))
            covered[p] = rec.offset + 1
        for p, stop in end.items():
            covered[p] = max(covered[p], stop)

    def _check_last_published(self) -> None:
        deleted = deleted_prefixes(self.reader)
        if deleted:
            raise CheckpointError(
                f"{self.events_topic}: the records before offsets {deleted} (partition: first "
                "offset left) were deleted; the trees start at offset 0")
        published, _ = read_checkpoints(self.kafka, self.checkpoints_topic)
        mine = [c for c in published if c.key_id == key_id(self.public)
                and c.topic == self.events_topic and signature_valid(c, self.public)]
        if mine:
            last = mine[-1]
            now = self.reader.end_offsets()
            for head in last.heads:
                if now.get(head.partition, 0) < head.end_offset:
                    raise CheckpointError(
                        f"{self.events_topic} partition {head.partition} ends at offset "
                        f"{now.get(head.partition, 0)}, before the end offset {head.end_offset} "
                        f"signed on {last.timestamp}: the log was truncated")
            self._advance(last.end_offsets())
            for head in last.heads:
                tree = self.trees.get(head.partition)
                if tree is None or tree.size != head.size or tree.root() != head.root:
                    raise CheckpointError(
                        f"{self.events_topic} partition {head.partition} no longer has the "
                        f"{head.size} records and the root signed up to offset "
                        f"{head.end_offset} on {last.timestamp}: the log was altered or "
                        "truncated")
        self._checked_last = True

    def checkpoint(self, now: datetime | None = None) -> Checkpoint:
        """Hash every new committed record up to the current last stable offsets, sign and
        publish the heads."""
        if not self._checked_last:
            self._check_last_published()
        self._advance(self.reader.end_offsets())
        heads = [Head(p, self.covered[p], t.size, t.root())
                 for p, t in sorted(self.trees.items())]
        checkpoint = sign_checkpoint(self.key, self.events_topic, now or datetime.now(UTC),
                                     heads)
        from kafka.errors import KafkaError

        try:
            self.producer.send(self.checkpoints_topic, key=b"checkpoint",
                               value=canonical_json(checkpoint.to_json())).get(timeout=30)
        except KafkaError as exc:
            raise CheckpointError(f"publishing to {self.checkpoints_topic} failed") from exc
        return checkpoint

    def run(self, every_s: float, stop: Any) -> None:
        """Checkpoint every ``every_s`` seconds until ``stop`` (a threading.Event) is set."""
        while True:
            started = time.monotonic()
            checkpoint = self.checkpoint()
            print(f"checkpoint {checkpoint.timestamp}: "
                  f"{sum(checkpoint.sizes().values())} records, key {checkpoint.key_id}",
                  file=sys.stderr, flush=True)
            if stop.wait(max(0.0, every_s - (time.monotonic() - started))):
                return

    def close(self) -> None:
        """Flush and close the producer and the reader."""
        self.producer.close()
        self.reader.close()
