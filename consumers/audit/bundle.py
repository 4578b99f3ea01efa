"""Audit bundles: export a window of ``lead.events`` with what verifies it; verify offline.

**Layout** of a bundle directory (format 3)::

    manifest.json        format, topic, key_id, window (received_at, [from, to]), exported_at,
                         anchored, per partition {start, end, start_offset, end_offset,
                         frontier}, the consistency proofs between successive checkpoints, the
                         leaf encoding
    checkpoints.jsonl    the signed checkpoints, oldest first: the *anchor* (the last one whose
                         end offsets are at or before the window's first record; absent if
                         none) ... the *covering* one (the first whose end offsets are past
                         the window's last record)
    events.jsonl         every committed record of [start_offset, end_offset) per partition,
                         partition by partition in offset order: {"partition", "offset",
                         "leaf", "key": base64|null, "value": base64 (the raw canonical
                         record), "proof": [hex, ...]} where leaf is the record's leaf index
                         (its ordinal among the partition's committed records) and proof the
                         RFC 6962 inclusion proof of that leaf in the covering checkpoint's
                         tree of its partition
    public_key.pem       the hub's Ed25519 checkpoint key (pin it: ``verify --key-id``)
    schemas/             every schemas/avro/*.avsc and CanonicalRecord.avsc (the envelope),
                         so the records can be decoded with the bundle alone
    README.txt           this layout, for whoever opens the directory
    seal.json            the hub's signature over the SHA-256 of every other file and of every
                         manifest field (below)

**The seal: every byte is vouched for.** The records, checkpoints and proofs verify against
the signed tree heads, but the manifest's other fields (the window, when it was exported), the
schemas, the README and the key file are not in any tree. So the exporter, which holds the
hub's signing key, writes ``seal.json``, canonical JSON (sorted keys, no whitespace) and a
newline::

    {"format": "leadhub-audit-bundle/3", "key_id": hex16,
     "files":  {relative path: SHA-256 hex} for every file of the bundle but seal.json,
     "fields": {field path: SHA-256 hex of the canonical JSON of its value} for every manifest
               field and, recursively, every field of an object-valued field ("window",
               "window.from", "partitions.2.end_offset", ...),
     "signature": base64 Ed25519 over b"leadhub-audit-bundle/3 seal\n" + canonical JSON of
                  the seal without "signature"}

(the prefix keeps a seal's signature from ever passing for a checkpoint's, and back).
:func:`verify_seal` then fails, naming what differs: a file whose SHA-256 is not the sealed
one, a sealed (or required) file that is missing, a file the seal does not list or anything
that is not a regular file (symbolic link, empty directory), a manifest field changed, added
or removed (the most specific path: ``manifest.json field 'window.to'``), a seal that is not
byte for byte its canonical form, of another key, or whose signature does not verify. The file
digests alone would catch every change; the field digests say which field it was.

**Leaves, not offsets.** ``lead.events`` is written in Kafka transactions, so its offsets have
gaps (commit markers, aborted records); a tree's leaves are a partition's committed records in
offset order (:mod:`consumers.audit.checkpoints`). So ``start``/``end`` are leaf indices (the
anchor's and the covering checkpoint's tree sizes; ``end - start`` records are exported) and
``start_offset``/``end_offset`` the offsets those checkpoints cover up to (exclusive).

**Soundness.** A partition's tree starts at offset 0, so ``frontier`` holds the roots of the
perfect subtrees covering leaves ``[0, start)`` (O(log n) hashes), which must fold to the
anchor's signed root at size ``start`` (with no anchor, ``start`` and ``start_offset`` are 0
and the frontier empty). Appending the leaves of the exported records to that frontier must
reproduce the signed root of every checkpoint in the bundle at its size; each record's own
proof shows it at its leaf index in the covering tree; leaf indices must run from ``start`` to
``end`` without a hole, offsets must increase and fall within every checkpoint's claim (leaf
``size - 1`` below its end offset, leaf ``size`` at or past it); and successive checkpoints
must be consistent (RFC 6962 consistency proofs between their sizes; end offsets never go
back). So a changed, missing, reordered or inserted record, a moved offset, a doctored prefix
or a forged checkpoint cannot pass. Offsets absent from a bundle are gaps the verifier cannot
tell from one another (markers, aborted records): what it proves is that *every leaf* of the
signed trees between the anchor and the covering checkpoint is in the bundle.

**Older formats are not read.** Format 2 bundles have no seal (their window, schemas and other
files were vouched for by nothing): they fail with a message saying so; export the window
again (the log and its checkpoints are still on the hub). Format 1 bundles (leaf index =
offset) fail too: their checkpoints do not verify under checkpoint format 2.

:func:`verify_bundle` and :func:`verify_seal` are pure (parsed content in, failures out);
:func:`read_bundle_and_verify`, :func:`finish_bundle` and :func:`export_bundle` are the file
and Kafka adapters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consumers.audit.checkpoints import (
    Checkpoint,
    deleted_prefixes,
    key_id,
    load_public_key_pem,
    public_bytes,
    public_key_pem,
    read_checkpoints,
    record_leaf_hash,
    signature_valid,
)
from consumers.audit.digest import canonical_json
from consumers.audit.errors import BundleError, CheckpointError, EmptyWindowError, SetupError
from consumers.audit.hash_files import HashFiles
from consumers.audit.merkle import (
    CompactTree,
    LeafHashes,
    verify_consistency,
    verify_inclusion,
)
from schemas.kafka_connection import KafkaConnection

BUNDLE_FORMAT = "leadhub-audit-bundle/3"
#: The formats this version cannot read, and why (see the module doc).
OLDER_FORMATS = {
    "leadhub-audit-bundle/2": "a format 2 bundle has no seal over its manifest and files, so "
                              "it cannot be verified byte for byte: export the window again",
    "leadhub-audit-bundle/1": "a format 1 bundle (leaf index = offset) does not verify under "
                              "checkpoint format 2: export the window again",
}
MANIFEST_FILE = "manifest.json"
CHECKPOINTS_FILE = "checkpoints.jsonl"
EVENTS_FILE = "events.jsonl"
KEY_FILE = "public_key.pem"
SCHEMAS_DIR = "schemas"
README_FILE = "README.txt"
SEAL_FILE = "seal.json"
#: Files without which a bundle cannot be verified at all (missing: a named failure).
REQUIRED_FILES = (MANIFEST_FILE, CHECKPOINTS_FILE, EVENTS_FILE, KEY_FILE)
#: What a seal's signature covers starts with this (never a checkpoint's prefix).
SEAL_CONTEXT = BUNDLE_FORMAT.encode() + b" seal\n"
LEAF_ENCODING = ('b"LHLEAF1" || u16 len(topic) || topic || u32 partition || u64 offset || '
                 'u32 len(key) (0xFFFFFFFF: null) || key || u32 len(value) || value; '
                 'big-endian; leaf hash SHA-256(0x00 || leaf); one RFC 6962 tree per partition '
                 'over its committed records in offset order, leaf index = the ordinal of the '
                 'record (offsets increase, with gaps)')


# -- verification (pure) --------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """One thing that did not verify: where (partition and offset or leaf index, checkpoint,
    file of the bundle or manifest field) and why. A missing record has no offset the verifier
    could know: it is named by its leaf index (and the reason gives the offsets it lies
    between)."""

    reason: str
    partition: int | None = None
    offset: int | None = None
    checkpoint: int | None = None
    leaf: int | None = None
    #: the bundle file concerned (relative path, ``/``-separated)
    file: str | None = None
    #: the manifest field concerned (``window.to``; ``file`` is then manifest.json)
    field: str | None = None

    def describe(self) -> str:
        """``partition 2 offset 17: ...``, ``partition 2 leaf #9: ...``, ``checkpoint #3:
        ...``, ``schemas/X.avsc: ...`` or ``manifest.json field 'window.to': ...``."""
        if self.field is not None:
            return f"{MANIFEST_FILE} field {self.field!r}: {self.reason}"
        if self.file is not None:
            return f"{self.file}: {self.reason}"
        if self.offset is not None:
            return f"partition {self.partition} offset {self.offset}: {self.reason}"
        if self.leaf is not None:
            return f"partition {self.partition} leaf #{self.leaf}: {self.reason}"
        if self.checkpoint is not None:
            return f"checkpoint #{self.checkpoint}: {self.reason}"
        if self.partition is not None:
            return f"partition {self.partition}: {self.reason}"
        return self.reason


@dataclass
class Report:
    """What verification found. ``ok`` iff nothing failed."""

    records: int = 0
    checkpoints: int = 0
    key_id: str = ""
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True iff every check passed."""
        return not self.failures

    @property
    def first(self) -> Failure | None:
        """The first failure found (in bundle order), if any."""
        return self.failures[0] if self.failures else None


def _hexes(values: Any) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


@dataclass(frozen=True)
class _Span:
    """One partition of the manifest: leaves ``[start, end)``, offsets ``[start_offset,
    end_offset)``, the frontier of leaves ``[0, start)``."""

    start: int
    end: int
    start_offset: int
    end_offset: int
    frontier: list[bytes]


def _spans(manifest: Mapping[str, Any]) -> dict[int, _Span]:
    """The manifest's partitions; ValueError if malformed."""
    try:
        return {int(p): _Span(int(s["start"]), int(s["end"]), int(s["start_offset"]),
                              int(s["end_offset"]), _hexes(s["frontier"]))
                for p, s in manifest["partitions"].items()}
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(type(exc).__name__) from exc


@dataclass
class _Partition:
    """Verification state of one partition while events.jsonl streams by."""

    span: _Span
    tree: CompactTree
    #: The next leaf index expected, and the least offset its record may have.
    leaf: int
    offset: int
    #: tree size -> [(checkpoint index, signed root)] for the sizes inside the bundle
    roots_at: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    #: tree size -> [(checkpoint index, end offset)]: leaf ``size - 1`` lies below the end
    #: offset, leaf ``size`` at or past it
    ends_at: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


def verify_bundle(manifest: Mapping[str, Any], checkpoints: list[Mapping[str, Any]],
                  events: Iterable[Mapping[str, Any] | None], public_key: bytes,
                  *, expected_key_id: str | None = None) -> Report:
    """Verify a bundle's parsed content; see the module doc. No I/O.

    ``events`` yields each parsed line of events.jsonl (None for a line that did not parse).
    ``expected_key_id`` pins the signing key; without it the bundle's own key is trusted
    (and reported, to be compared with the hub's published key id).
    """
    report = Report(key_id=key_id(public_key))
    fail = report.failures.append
    found_format = manifest.get("format")
    if found_format != BUNDLE_FORMAT:
        why = OLDER_FORMATS.get(str(found_format), f"not a {BUNDLE_FORMAT} manifest")
        fail(Failure(why, file=MANIFEST_FILE, field="format"))
        return report
    if expected_key_id is not None and expected_key_id != report.key_id:
        fail(Failure(f"the bundle's key {report.key_id} is not the pinned key "
                     f"{expected_key_id}"))
    topic = str(manifest.get("topic"))
    try:
        spans = _spans(manifest)
        proofs = {(int(c["partition"]), int(c["from"]), int(c["to"])): _hexes(c["proof"])
                  for c in manifest.get("consistency", [])}
    except (KeyError, TypeError, ValueError) as exc:
        fail(Failure(f"malformed manifest ({exc})"))
        return report

    # 1. checkpoints: parse, signature, sizes and end offsets never shrink, consistency proofs
    signed: list[tuple[int, Checkpoint]] = []
    for index, obj in enumerate(checkpoints):
        try:
            checkpoint = Checkpoint.from_json(obj)
        except CheckpointError as exc:
            fail(Failure(f"malformed ({exc})", checkpoint=index))
            continue
        if checkpoint.topic != topic or not signature_valid(checkpoint, public_key):
            fail(Failure(f"signature does not verify with key {report.key_id} "
                         "(forged or altered)", checkpoint=index))
            continue
        signed.append((index, checkpoint))
    report.checkpoints = len(signed)
    if not signed or len(signed) != len(checkpoints):
        if not signed:
            fail(Failure("no valid signed checkpoint in the bundle"))
        return report
    for (i, older), (j, newer) in itertools.pairwise(signed):
        for head in newer.heads:
            old = older.head(head.partition)
            if old is None:
                continue
            if old.end_offset > head.end_offset or old.size > head.size or not (
                    verify_consistency(old.size, head.size,
                                       proofs.get((head.partition, i, j), []), old.root,
                                       head.root)):
                fail(Failure(f"not consistent with checkpoint #{i} for partition "
                             f"{head.partition} (sizes {old.size} -> {head.size}, end offsets "
                             f"{old.end_offset} -> {head.end_offset})", checkpoint=j))
    anchored = bool(manifest.get("anchored"))
    covering = signed[-1][1]

    # 2. per partition: prefix frontier against the anchor, the covering checkpoint's extent
    state: dict[int, _Partition] = {}
    broken: set[int] = set()
    for p, span in spans.items():
        cover_head = covering.head(p)
        if cover_head is None or (cover_head.size, cover_head.end_offset) != (span.end,
                                                                              span.end_offset):
            fail(Failure(f"the bundle ends at leaf #{span.end} (offset {span.end_offset}), the "
                         "covering checkpoint at " + (
                             f"leaf #{cover_head.size} (offset {cover_head.end_offset})"
                             if cover_head else "nothing"), partition=p))
            broken.add(p)
        try:
            tree = CompactTree(span.start, span.frontier)
        except ValueError:
            fail(Failure(f"malformed frontier for the {span.start} records before offset "
                         f"{span.start_offset}", partition=p))
            broken.add(p)
            continue
        if anchored:
            anchor = signed[0][1].head(p)
            if anchor is None or (anchor.size, anchor.end_offset) != (
                    span.start, span.start_offset) or tree.root() != anchor.root:
                fail(Failure(f"the hashes of the {span.start} records before offset "
                             f"{span.start_offset} do not match the anchor checkpoint",
                             partition=p))
                broken.add(p)
        elif span.start != 0 or span.start_offset != 0:
            fail(Failure("no anchor checkpoint, yet the records start after offset 0",
                         partition=p))
            broken.add(p)
        part = state[p] = _Partition(span, tree, span.start, span.start_offset)
        for index, checkpoint in signed:
            at = checkpoint.head(p)
            if at is None or not span.start <= at.size <= span.end:
                continue
            part.ends_at.setdefault(at.size, []).append((index, at.end_offset))
            if at.size > span.start:
                part.roots_at.setdefault(at.size, []).append((index, at.root))

    # 3. the records: inclusion at their leaf, leaves without a hole, offsets, roots
    for line_no, line in enumerate(events, start=1):
        report.records += 1
        try:
            assert line is not None
            p, offset, leaf = int(line["partition"]), int(line["offset"]), int(line["leaf"])
            key = None if line["key"] is None else base64.b64decode(line["key"], validate=True)
            value = base64.b64decode(line["value"], validate=True)
            proof = _hexes(line["proof"])
            hashed = record_leaf_hash(topic, p, offset, key, value)
        except (AssertionError, KeyError, TypeError, ValueError, struct.error):
            fail(Failure(f"events.jsonl line {line_no} is unreadable"))
            continue
        if p not in spans:
            fail(Failure("a record of a partition the bundle does not cover", partition=p,
                         offset=offset))
            continue
        tip = covering.head(p)
        if tip is None or not verify_inclusion(leaf, tip.size, hashed, proof, tip.root):
            fail(Failure("the record is not in the signed tree (altered, inserted or moved)",
                         partition=p, offset=offset))
        if p in broken:
            continue
        part = state[p]
        failure = _out_of_place(part, p, offset, leaf)
        if failure is not None:
            fail(failure)
            broken.add(p)
            continue
        for index, end_offset in part.ends_at.get(leaf, ()):
            if offset < end_offset:
                fail(Failure(f"checkpoint #{index} covers {leaf} records up to offset "
                             f"{end_offset}, yet leaf #{leaf} lies below that offset",
                             partition=p, offset=offset))
                broken.add(p)
        part.tree.append(hashed)
        part.leaf, part.offset = leaf + 1, offset + 1
        for index, end_offset in part.ends_at.get(leaf + 1, ()):
            if offset >= end_offset:
                fail(Failure(f"checkpoint #{index} covers {leaf + 1} records up to offset "
                             f"{end_offset}, yet leaf #{leaf} lies at or past that offset",
                             partition=p, offset=offset))
                broken.add(p)
        for index, root in part.roots_at.get(leaf + 1, ()):
            if part.tree.root() != root:
                fail(Failure(f"the records up to here do not give the root checkpoint "
                             f"#{index} signed", partition=p, offset=offset))
                broken.add(p)
    for p, part in state.items():
        if p not in broken and part.leaf != part.span.end:
            count = part.span.end - part.leaf
            fail(Failure(f"missing: {count} record{'s' if count > 1 else ''} from here on, with "
                         f"offsets in [{part.offset}, {part.span.end_offset}) (the bundle ends "
                         f"before the covering checkpoint's {part.span.end} leaves)",
                         partition=p, leaf=part.leaf))
    return report


def _out_of_place(part: _Partition, p: int, offset: int, leaf: int) -> Failure | None:
    """Why a record (already checked against the covering tree) is not the one expected next."""
    want, least = part.leaf, part.offset
    if leaf > want:
        return Failure(f"missing or out of order: leaf #{want}, a record with an offset in "
                       f"[{least}, {offset}), is not where it belongs (the next record in the "
                       f"bundle is leaf #{leaf} at offset {offset})", partition=p, leaf=want)
    if leaf < want:
        return Failure(f"out of order or repeated (leaf #{leaf} appears where leaf #{want} "
                       "belongs)", partition=p, offset=offset)
    if leaf >= part.span.end:
        return Failure(f"beyond the covering checkpoint's {part.span.end} leaves", partition=p,
                       offset=offset)
    if offset < least:
        return Failure(f"offsets do not increase (leaf #{leaf} has offset {offset}, below "
                       f"{least})", partition=p, offset=offset)
    if offset >= part.span.end_offset:
        return Failure(f"beyond the covering checkpoint's end offset {part.span.end_offset}",
                       partition=p, offset=offset)
    return None


# -- the seal (pure) ------------------------------------------------------------------------

def field_digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 hex of the canonical JSON of every manifest field, by path: each top-level field
    and, recursively, each field of an object-valued one (``window``, ``window.from``, ...)."""
    digests: dict[str, str] = {}

    def walk(path: str, value: Any) -> None:
        digests[path] = hashlib.sha256(canonical_json(value)).hexdigest()
        if isinstance(value, Mapping):
            for name, inner in value.items():
                walk(f"{path}.{name}", inner)

    for name, value in manifest.items():
        walk(str(name), value)
    return digests


def seal_bytes(private_key: Ed25519PrivateKey, manifest: Mapping[str, Any],
               files: Mapping[str, str]) -> bytes:
    """The content of seal.json (see the module doc): ``files`` maps the relative path of
    every other file of the bundle to its SHA-256 hex, ``manifest`` is manifest.json's."""
    body = {"format": BUNDLE_FORMAT, "key_id": key_id(public_bytes(private_key.public_key())),
            "files": dict(files), "fields": field_digests(manifest)}
    signature = private_key.sign(SEAL_CONTEXT + canonical_json(body))
    return canonical_json({**body, "signature": base64.b64encode(signature).decode()}) + b"\n"


def verify_seal(seal: bytes | None, manifest: Mapping[str, Any] | None,
                files: Mapping[str, str], strays: Mapping[str, str],
                public_key: bytes | None) -> list[Failure]:
    """What the seal finds wrong with a bundle; no I/O.

    ``seal`` is seal.json's bytes (None: missing); ``manifest`` the parsed manifest (None: it
    did not parse, which the caller reports); ``files`` the SHA-256 hex of every regular file
    found in the bundle, by relative ``/``-separated path, seal.json included; ``strays`` what
    is wrong with whatever else was found, by path (symbolic links, empty directories,
    devices, unreadable files: :func:`inventory`);
    ``public_key`` the key the bundle is verified with (None: unreadable, reported by the
    caller). Each failure names the file or the manifest field; a changed manifest is named by
    its fields (the most specific paths that differ), its bytes only if every field matches.
    """
    failures: list[Failure] = []
    fail = failures.append
    body: dict[str, Any] | None = None
    if seal is None:
        fail(Failure("missing: nothing vouches for the manifest and the other files (a bundle "
                     "of format 2 or older has no seal: export the window again)",
                     file=SEAL_FILE))
    else:
        body = _check_seal(seal, public_key, fail)
    sealed: dict[str, str] = {p: d for p, d in (body or {}).get("files", {}).items()
                              if p != SEAL_FILE}
    for path in sorted((set(sealed) | set(REQUIRED_FILES)) - set(files) - set(strays)):
        fail(Failure("missing", file=path))
    if body is not None:
        named = _field_failures(body["fields"], manifest) if manifest is not None else []
        failures.extend(named)
        for path, digest in sorted(sealed.items()):
            found = files.get(path)
            if found is None or found == digest or (path == MANIFEST_FILE and named):
                continue
            why = ("every field has its sealed value, yet the bytes differ (reformatted)"
                   if path == MANIFEST_FILE and manifest is not None else
                   "altered or replaced")
            fail(Failure(f"SHA-256 {found[:16]}... is not the sealed {digest[:16]}...: {why}",
                         file=path))
        for path in sorted(set(files) - set(sealed) - {SEAL_FILE}):
            fail(Failure("unexpected: the seal does not list this file", file=path))
    for path, why in sorted(strays.items()):
        fail(Failure(why, file=path))
    return failures


def _digest_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _check_seal(seal: bytes, public_key: bytes | None,
                fail: Any) -> dict[str, Any] | None:
    """The seal's body if its file and field digests are worth comparing; failures via
    ``fail``. None if it is unreadable, of another format, or altered (its signature fails
    with the key it names); a seal of another key is compared (that names the changed key
    file)."""
    try:
        obj = json.loads(seal)
        signature = base64.b64decode(obj["signature"], validate=True)
        body = {k: v for k, v in obj.items() if k != "signature"}
        if not (isinstance(body.get("format"), str) and isinstance(body.get("key_id"), str)
                and _digest_map(body.get("files")) and _digest_map(body.get("fields"))):
            raise ValueError("not a seal")
    except (AttributeError, KeyError, TypeError, ValueError, binascii.Error):
        fail(Failure("unreadable: not a seal", file=SEAL_FILE))
        return None
    if seal != canonical_json(obj) + b"\n":
        fail(Failure("not byte for byte the canonical JSON the exporter writes (altered)",
                     file=SEAL_FILE))
    if body["format"] != BUNDLE_FORMAT:
        fail(Failure(f"a seal of format {body['format']!r}, not {BUNDLE_FORMAT}",
                     file=SEAL_FILE))
        return None
    if public_key is None:
        return body
    kid = key_id(public_key)
    if body["key_id"] != kid:
        fail(Failure(f"sealed by key {body['key_id']}, not by the key {kid} the bundle is "
                     "verified with", file=SEAL_FILE))
        return body
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, SEAL_CONTEXT + canonical_json(body))
    except (InvalidSignature, ValueError):
        fail(Failure(f"the signature does not verify with key {kid} (forged or altered)",
                     file=SEAL_FILE))
        return None
    return body


def _field_failures(sealed: Mapping[str, str], manifest: Mapping[str, Any]) -> list[Failure]:
    """The manifest fields that differ from the sealed ones, each named once, most precisely:
    a field removed or added (not the fields inside it), or a changed field with no changed
    field inside it."""
    found = field_digests(manifest)
    differing = {p for p in set(sealed) | set(found) if sealed.get(p) != found.get(p)}

    def container(path: str, paths: Iterable[str]) -> bool:
        return any(q.startswith(path + ".") for q in paths)

    reported: list[str] = []
    failures: list[Failure] = []
    for path in sorted(differing, key=lambda p: (p.count("."), p)):
        if any(path.startswith(r + ".") for r in reported):
            continue
        if path in sealed and path in found:
            if container(path, sealed) and container(path, found):
                continue  # both objects: the fields inside say what changed
            reason = "changed: not the value the hub sealed"
        elif path in sealed:
            reason = "removed: the seal has it"
        else:
            reason = "added: the seal does not have it"
        reported.append(path)
        failures.append(Failure(reason, file=MANIFEST_FILE, field=path))
    return failures


# -- file adapter ---------------------------------------------------------------------------

def _jsonl(path: Path) -> Iterator[Any]:
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                yield None


def _sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def inventory(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Everything under ``directory``: (the SHA-256 hex of every regular file by relative
    ``/``-separated path, and what is wrong with everything else by path: a symbolic link,
    which is not followed, an empty directory (path with a trailing ``/``), a device or socket,
    a file or directory that cannot be read)."""
    files: dict[str, str] = {}
    strays: dict[str, str] = {}

    def walk(folder: Path, prefix: str) -> bool:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            strays[prefix] = f"unreadable ({type(exc).__name__})"
            return True
        for entry in entries:
            path = prefix + entry.name
            if entry.is_symlink():
                strays[path] = "unexpected: a symbolic link"
            elif entry.is_dir():
                if not walk(Path(entry.path), path + "/"):
                    strays[path + "/"] = "unexpected: an empty directory"
            elif entry.is_file():
                try:
                    files[path] = _sha256_file(Path(entry.path))
                except OSError as exc:
                    strays[path] = f"unreadable ({type(exc).__name__})"
            else:
                strays[path] = "unexpected: not a regular file"
        return bool(entries)

    walk(directory, "")
    return files, strays


def read_bundle_and_verify(directory: Path, *, expected_key_id: str | None = None,
                           public_key_file: Path | None = None) -> Report:
    """Read a bundle directory and verify it: the records (streams events.jsonl; no Kafka),
    and every file against the seal. Failures of the content come first (they name records
    and checkpoints), then the seal's (they name files and manifest fields).

    ``public_key_file`` (a PEM) replaces the bundle's own key for every signature (the
    bundle's key file is still checked against the seal). A required file that is missing or
    unreadable is a named failure (the records are then not checked). Raises BundleError if
    ``directory`` is not a directory, or ``public_key_file`` cannot be read.
    """
    if not directory.is_dir():
        raise BundleError(f"{directory} is not a directory: not an audit bundle")
    files, strays = inventory(directory)
    problems: list[Failure] = []

    def read(name: str) -> bytes | None:
        if name not in files:
            return None  # verify_seal reports it: missing, not a regular file, unreadable
        try:
            return (directory / name).read_bytes()
        except OSError as exc:
            problems.append(Failure(f"unreadable ({type(exc).__name__})", file=name))
            return None

    manifest: dict[str, Any] | None = None
    manifest_bytes = read(MANIFEST_FILE)
    if manifest_bytes is not None:
        try:
            parsed = json.loads(manifest_bytes)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            manifest = parsed
        else:
            problems.append(Failure("not a JSON object", file=MANIFEST_FILE))
    if public_key_file is not None:
        try:
            key_pem: bytes | None = public_key_file.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {public_key_file} ({type(exc).__name__})") from exc
    else:
        key_pem = read(KEY_FILE)
    public_key: bytes | None = None
    if key_pem is not None:
        try:
            public_key = load_public_key_pem(key_pem)
        except CheckpointError as exc:
            if public_key_file is not None:
                raise BundleError(f"{public_key_file}: {exc}") from exc
            problems.append(Failure(str(exc), file=KEY_FILE))
    seal_failures = verify_seal(read(SEAL_FILE), manifest, files, strays, public_key)
    checkpoint_bytes = read(CHECKPOINTS_FILE)
    if (manifest is None or public_key is None or checkpoint_bytes is None
            or EVENTS_FILE not in files):
        report = Report(key_id=key_id(public_key) if public_key is not None else "")
        if public_key is not None and expected_key_id not in (None, report.key_id):
            report.failures.append(Failure(f"the bundle's key {report.key_id} is not the "
                                           f"pinned key {expected_key_id}"))
    else:
        checkpoints = [_parse_line(line) for line in checkpoint_bytes.splitlines()
                       if line.strip()]
        report = verify_bundle(manifest, [c if isinstance(c, dict) else {} for c in checkpoints],
                               _jsonl(directory / EVENTS_FILE), public_key,
                               expected_key_id=expected_key_id)
    report.failures.extend(problems)
    report.failures.extend(seal_failures)
    return report


def _parse_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def finish_bundle(directory: Path, private_key: Ed25519PrivateKey,
                  manifest: Mapping[str, Any], checkpoints: Sequence[Checkpoint],
                  schemas: Mapping[str, bytes]) -> None:
    """Write every file of a bundle but events.jsonl (written first, by the caller), then seal
    them all: manifest.json, checkpoints.jsonl, public_key.pem, ``schemas`` (file name ->
    content) under schemas/, README.txt, and last seal.json over every file then in
    ``directory`` (see the module doc). Raises BundleError if the directory holds anything but
    regular files."""
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True)
    (directory / MANIFEST_FILE).write_text(manifest_text)
    with (directory / CHECKPOINTS_FILE).open("wb") as out:
        for c in checkpoints:
            out.write(canonical_json(c.to_json()) + b"\n")
    (directory / KEY_FILE).write_bytes(public_key_pem(public_bytes(private_key.public_key())))
    (directory / SCHEMAS_DIR).mkdir()
    for name, content in sorted(schemas.items()):
        (directory / SCHEMAS_DIR / name).write_bytes(content)
    (directory / README_FILE).write_text(README.format(
        format=BUNDLE_FORMAT, doc=__doc__ or "", leaf=LEAF_ENCODING))
    files, strays = inventory(directory)
    if strays or SEAL_FILE in files:
        raise BundleError(f"{directory} holds {', '.join(strays) or SEAL_FILE}: export into a "
                          "new directory")
    # the fields as a verifier will read them back
    (directory / SEAL_FILE).write_bytes(seal_bytes(private_key, json.loads(manifest_text),
                                                   files))


def bundle_manifest(topic: str, kid: str, window: tuple[datetime, datetime],
                    exported_at: datetime, anchored: bool,
                    partitions: Mapping[int, Mapping[str, Any]],
                    consistency: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest of a bundle (see the module doc): ``partitions`` maps each partition to
    its {start, end, start_offset, end_offset, frontier}."""
    return {
        "format": BUNDLE_FORMAT, "topic": topic, "key_id": kid,
        "window": {"from": window[0].astimezone(UTC).isoformat(),
                   "to": window[1].astimezone(UTC).isoformat()},
        "exported_at": exported_at.astimezone(UTC).isoformat(),
        "anchored": anchored,
        "partitions": {str(p): dict(span) for p, span in sorted(partitions.items())},
        "consistency": [dict(c) for c in consistency],
        "leaf_encoding": LEAF_ENCODING,
    }


def event_line(partition: int, offset: int, leaf: int, key: bytes | None, value: bytes,
               proof: Sequence[bytes]) -> str:
    """One line of events.jsonl (with its newline)."""
    return json.dumps({
        "partition": partition, "offset": offset, "leaf": leaf,
        "key": base64.b64encode(key).decode() if key is not None else None,
        "value": base64.b64encode(value).decode(),
        "proof": [h.hex() for h in proof]}, separators=(",", ":")) + "\n"


def schema_files(schemas_dir: Path) -> dict[str, bytes]:
    """The schemas a bundle carries: every ``*.avsc`` of ``schemas_dir`` and
    CanonicalRecord.avsc (the envelope)."""
    from schemas.canonical import CANONICAL_SCHEMA

    found = {avsc.name: avsc.read_bytes() for avsc in sorted(schemas_dir.glob("*.avsc"))}
    found["CanonicalRecord.avsc"] = json.dumps(CANONICAL_SCHEMA, indent=2).encode()
    return found


# -- export (Kafka adapter) -----------------------------------------------------------------

README = """leadhub audit bundle ({format})

A window of the hub's event log with what is needed to verify it offline.
Verify with: leadhub audit verify <this directory> [--key-id HEX]

{doc}
Leaf encoding: {leaf}
"""


def export_bundle(kafka: KafkaConnection, events_topic: str, checkpoints_topic: str,
                  private_key: Ed25519PrivateKey, window_from: datetime, window_to: datetime,
                  directory: Path, schemas_dir: Path) -> dict[str, Any]:
    """Write a bundle for records received in [window_from, window_to], sealed with
    ``private_key`` (the hub's checkpoint signing key); return its manifest.

    Reads lead.events (``read_committed``) twice: every record from offset 0 for the leaf
    hashes, counting the leaves below each checkpoint's end offsets, then the exported records,
    whose leaf index is their ordinal from the anchor's size on (each checked against the leaf
    hash of the first read). Keeps every leaf hash up to the covering checkpoint in temporary
    files (~64 bytes of disk per record, memory bounded whatever the log's length; plus a few
    integers per checkpoint). Raises SetupError when no checkpoint covers the window yet,
    BundleError when the directory is not empty or the log does not match the checkpoints,
    EmptyWindowError (before writing anything) when no record was received in the window.
    """
    from consumers.audit.kafka_log import TopicReader
    from consumers.audit.window import LogTimes, empty_export_message
    from schemas.canonical import decode_canonical
    from schemas.errors import HubError

    if directory.exists() and any(directory.iterdir()):
        raise BundleError(f"{directory} is not empty: export into a new directory")
    public_key = public_bytes(private_key.public_key())
    kid = key_id(public_key)
    published, _ = read_checkpoints(kafka, checkpoints_topic)
    mine = [c for c in published if c.topic == events_topic and signature_valid(c, public_key)]
    if not mine:
        raise SetupError(f"no checkpoint signed by key {kid} on {checkpoints_topic}: run "
                         "`leadhub audit checkpoint --once` first")
    ends = [c.end_offsets() for c in mine]
    leaves: dict[int, LeafHashes] = {}
    #: per partition: the checkpoints' end offsets, ascending, and the leaves below each
    bounds: dict[int, list[int]] = {}
    below: dict[int, dict[int, int]] = {}
    first_in: dict[int, int] = {}
    last_in: dict[int, int] = {}
    times = LogTimes()  # when the log's records were received, for an empty window's message
    with TopicReader(kafka, events_topic, client_id="leadhub-audit-export") as reader, \
            HashFiles() as hash_files:
        deleted = deleted_prefixes(reader)
        if deleted:
            raise BundleError(f"{events_topic}: the records before offsets {deleted} "
                              "(partition: first offset left) were deleted; the trees start "
                              "at offset 0")
        end_now = reader.end_offsets()
        for p in end_now:
            leaves[p] = LeafHashes(new_level=hash_files.column)
            bounds[p] = sorted({e[p] for e in ends if p in e})
            below[p] = {}
        limit = {p: bounds[p][-1] if bounds[p] else 0 for p in end_now}
        cursor = dict.fromkeys(end_now, 0)
        for rec in reader.read(end_now):
            p, offset = rec.partition, rec.offset
            todo, i = bounds[p], cursor[p]
            while i < len(todo) and todo[i] <= offset:
                below[p][todo[i]] = len(leaves[p])
                i += 1
            cursor[p] = i
            if offset < limit[p]:
                leaves[p].append(record_leaf_hash(events_topic, p, offset, rec.key, rec.value))
            try:
                decoded = decode_canonical(rec.value)
            except HubError:
                continue
            received = decoded.received_at
            times.add(received, decoded.kind == "EVENT")
            if window_from <= received <= window_to:
                first_in.setdefault(p, offset)
                last_in[p] = offset
        if not first_in:
            raise EmptyWindowError(empty_export_message(events_topic, window_from, window_to,
                                                        times))
        for p in end_now:
            for bound in bounds[p][cursor[p]:]:
                if bound <= end_now[p]:
                    below[p][bound] = len(leaves[p])
        start_needed = {p: first_in.get(p, end_now[p]) for p in end_now}
        end_needed = {p: last_in[p] + 1 if p in last_in else 0 for p in end_now}
        anchor_i = None
        for i, e in enumerate(ends):
            if all(e.get(p, 0) <= start_needed[p] for p in end_now):
                anchor_i = i
        cover_i = next((i for i, e in enumerate(ends)
                        if (anchor_i is None or i >= anchor_i)
                        and all(e.get(p, 0) >= end_needed[p] for p in end_now)), None)
        if cover_i is None:
            raise SetupError("no checkpoint covers the window's last record yet: run "
                             "`leadhub audit checkpoint --once` and export again")
        chosen = mine[anchor_i if anchor_i is not None else cover_i:cover_i + 1]
        anchor = chosen[0] if anchor_i is not None else None
        covering = chosen[-1]
        start = {p: anchor.sizes().get(p, 0) if anchor else 0 for p in end_now}
        start_offset = {p: anchor.end_offsets().get(p, 0) if anchor else 0 for p in end_now}
        end = {p: covering.sizes().get(p, 0) for p in end_now}
        end_offset = {p: covering.end_offsets().get(p, 0) for p in end_now}
        for c in chosen:
            for head in c.heads:
                p = head.partition
                if p not in leaves or below[p].get(head.end_offset) != head.size or not (
                        start[p] <= head.size <= end[p]) or (
                        leaves[p].root(head.size) != head.root):
                    raise BundleError(f"checkpoint {c.timestamp} does not match "
                                      f"{events_topic} partition {p}: run "
                                      "`leadhub audit verify` on a full export")
        consistency = []
        for i in range(len(chosen) - 1):
            for head in chosen[i + 1].heads:
                old = chosen[i].head(head.partition)
                if old is not None:
                    consistency.append({
                        "partition": head.partition, "from": i, "to": i + 1,
                        "proof": [h.hex() for h in leaves[head.partition].consistency_proof(
                            old.size, head.size)]})
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / EVENTS_FILE).open("w") as out:
            for p in sorted(end):
                if start[p] >= end[p]:
                    continue
                leaf = start[p]
                for rec in reader.read({p: end_offset[p]}, {p: start_offset[p]}):
                    hashed = record_leaf_hash(events_topic, p, rec.offset, rec.key, rec.value)
                    if leaf >= end[p] or leaves[p][leaf] != hashed:
                        raise BundleError(f"{events_topic} partition {p} changed during the "
                                          f"export (offset {rec.offset})")
                    out.write(event_line(p, rec.offset, leaf, rec.key, rec.value,
                                         leaves[p].inclusion_proof(leaf, end[p])))
                    leaf += 1
                if leaf != end[p]:
                    raise BundleError(f"{events_topic} partition {p} changed during the "
                                      f"export ({leaf - start[p]} of {end[p] - start[p]} "
                                      "records read again)")
        frontiers = {p: [h.hex() for h in leaves[p].frontier(start[p])] for p in end}
    manifest = bundle_manifest(
        events_topic, kid, (window_from, window_to), datetime.now(UTC), anchor_i is not None,
        {p: {"start": start[p], "end": end[p], "start_offset": start_offset[p],
             "end_offset": end_offset[p], "frontier": frontiers[p]} for p in end},
        consistency)
    finish_bundle(directory, private_key, manifest, chosen, schema_files(schemas_dir))
    return manifest
