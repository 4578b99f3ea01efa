"""Audit bundles: export a window of ``lead.events`` with what verifies it; verify offline.

**Layout** of a bundle directory::

    manifest.json        format, topic, window, per partition {start, end, frontier}, the
                         consistency proofs between successive checkpoints, the leaf encoding
    checkpoints.jsonl    the signed checkpoints, oldest first: the *anchor* (the last one at or
                         before the window's first record; absent if none) ... the *covering*
                         one (the first whose trees contain the window's last record)
    events.jsonl         every record of [start, end) per partition, partition by partition in
                         offset order: {"partition", "offset", "key": base64|null,
                         "value": base64 (the raw canonical record), "proof": [hex, ...]}
                         where proof is the RFC 6962 inclusion proof of the record's leaf in
                         the covering checkpoint's tree of its partition
    public_key.pem       the hub's Ed25519 checkpoint key (pin it: ``verify --key-id``)
    schemas/             every schemas/avro/*.avsc and CanonicalRecord.avsc (the envelope),
                         so the records can be decoded with the bundle alone
    README.txt           this layout, for whoever opens the directory

**Soundness.** A partition's tree starts at offset 0, so ``start`` is the anchor's tree size and
``frontier`` the roots of the perfect subtrees covering ``[0, start)`` (O(log n) hashes), which
must fold to the anchor's signed root (with no anchor, ``start`` is 0 and the frontier empty).
Appending the leaves of the exported records to that frontier must reproduce the signed root of
every checkpoint in the bundle at its size; each record's own proof shows it in the covering
tree; and successive checkpoints must be consistent (RFC 6962 consistency proofs). So a changed,
missing, reordered or inserted record, a doctored prefix or a forged checkpoint cannot pass.

:func:`verify_bundle` is pure (parsed content in, a report out); :func:`read_bundle_and_verify`
and :func:`export_bundle` are the file and Kafka adapters.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.audit.checkpoints import (
    Checkpoint,
    key_id,
    load_public_key_pem,
    public_key_pem,
    read_checkpoints,
    record_leaf_hash,
    signature_valid,
)
from consumers.audit.digest import canonical_json
from consumers.audit.errors import BundleError, CheckpointError, SetupError
from consumers.audit.hash_files import HashFiles
from consumers.audit.merkle import (
    CompactTree,
    LeafHashes,
    verify_consistency,
    verify_inclusion,
)

BUNDLE_FORMAT = "leadhub-audit-bundle/1"
LEAF_ENCODING = ('b"LHLEAF1" || u16 len(topic) || topic || u32 partition || u64 offset || '
                 'u32 len(key) (0xFFFFFFFF: null) || key || u32 len(value) || value; '
                 'big-endian; leaf hash SHA-256(0x00 || leaf); one RFC 6962 tree per partition, '
                 'leaf index = offset')


# -- verification (pure) --------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """One thing that did not verify: where (partition/offset or checkpoint) and why."""

    reason: str
    partition: int | None = None
    offset: int | None = None
    checkpoint: int | None = None

    def describe(self) -> str:
        """``partition 2 offset 17: ...`` or ``checkpoint #3 (...): ...``."""
        if self.offset is not None:
            return f"partition {self.partition} offset {self.offset}: {self.reason}"
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
    if manifest.get("format") != BUNDLE_FORMAT:
        fail(Failure(f"not a {BUNDLE_FORMAT} manifest"))
        return report
    if expected_key_id is not None and expected_key_id != report.key_id:
        fail(Failure(f"the bundle's key {report.key_id} is not the pinned key "
                     f"{expected_key_id}"))
    topic = str(manifest["topic"])
    spans: dict[int, dict[str, Any]] = {int(p): s for p, s in manifest["partitions"].items()}

    # 1. checkpoints: parse, signature, sizes never shrink, consistency proofs
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
    proofs = {(int(c["partition"]), int(c["from"]), int(c["to"])): _hexes(c["proof"])
              for c in manifest.get("consistency", [])}
    for (i, older), (j, newer) in itertools.pairwise(signed):
        for head in newer.heads:
            old = older.head(head.partition)
            if old is None:
                continue
            if old.size > head.size or not verify_consistency(
                    old.size, head.size, proofs.get((head.partition, i, j), []), old.root,
                    head.root):
                fail(Failure(f"not consistent with checkpoint #{i} for partition "
                             f"{head.partition} (sizes {old.size} -> {head.size})",
                             checkpoint=j))
    anchored = bool(manifest.get("anchored"))
    covering = signed[-1][1]

    # 2. per partition: prefix frontier, contiguous offsets, inclusion, roots at every size
    trees: dict[int, CompactTree] = {}
    expected: dict[int, int] = {}
    broken: set[int] = set()
    roots_at: dict[int, dict[int, list[tuple[int, bytes]]]] = {}
    for p, span in spans.items():
        start, end = int(span["start"]), int(span["end"])
        cover_head = covering.head(p)
        if cover_head is None or cover_head.size != end:
            fail(Failure(f"the bundle ends at offset {end}, the covering checkpoint at "
                         f"{cover_head.size if cover_head else 'nothing'}", partition=p))
            broken.add(p)
        try:
            trees[p] = CompactTree(start, _hexes(span["frontier"]))
        except ValueError:
            fail(Failure(f"malformed frontier for the records before offset {start}",
                         partition=p))
            broken.add(p)
            continue
        if anchored:
            anchor = signed[0][1].head(p)
            if anchor is None or anchor.size != start or trees[p].root() != anchor.root:
                fail(Failure(f"the hashes of the records before offset {start} do not match "
                             "the anchor checkpoint", partition=p, offset=None))
                broken.add(p)
        elif start != 0:
            fail(Failure("no anchor checkpoint, yet the records start after offset 0",
                         partition=p))
            broken.add(p)
        expected[p] = start
        for index, checkpoint in signed:
            at = checkpoint.head(p)
            if at is not None and start < at.size <= end:
                roots_at.setdefault(p, {}).setdefault(at.size, []).append((index, at.root))

    for line_no, line in enumerate(events, start=1):
        report.records += 1
        try:
            assert line is not None
            p, offset = int(line["partition"]), int(line["offset"])
            key = None if line["key"] is None else base64.b64decode(line["key"], validate=True)
            value = base64.b64decode(line["value"], validate=True)
            proof = _hexes(line["proof"])
        except (AssertionError, KeyError, TypeError, ValueError):
            fail(Failure(f"events.jsonl line {line_no} is unreadable"))
            continue
        if p not in spans:
            fail(Failure("a record of a partition the bundle does not cover", partition=p,
                         offset=offset))
            continue
        end = int(spans[p]["end"])
        hashed = record_leaf_hash(topic, p, offset, key, value)
        tip = covering.head(p)
        if tip is None or not verify_inclusion(offset, tip.size, hashed, proof, tip.root):
            fail(Failure("the record is not in the signed tree (altered, inserted or moved)",
                         partition=p, offset=offset))
        if p in broken:
            continue
        want = expected[p]
        if offset != want:
            why = (f"missing or out of order (the next record in the bundle has offset "
                   f"{offset})" if offset > want else
                   f"out of order or repeated (offset {offset} appears where {want} belongs)")
            fail(Failure(why, partition=p, offset=min(offset, want) if offset < want
                         else want))
            broken.add(p)
            continue
        if offset >= end:
            fail(Failure(f"beyond the covering checkpoint's tree size {end}", partition=p,
                         offset=offset))
            broken.add(p)
            continue
        tree = trees[p]
        tree.append(hashed)
        expected[p] = offset + 1
        for index, root in roots_at.get(p, {}).get(tree.size, []):
            if tree.root() != root:
                fail(Failure(f"the records up to here do not give the root checkpoint "
                             f"#{index} signed", partition=p, offset=offset))
                broken.add(p)
    for p, span in spans.items():
        if p not in broken and expected[p] != int(span["end"]):
            fail(Failure("missing (the bundle ends before the covering checkpoint)",
                         partition=p, offset=expected[p]))
    return report


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


def read_bundle_and_verify(directory: Path, *, expected_key_id: str | None = None,
                           public_key_file: Path | None = None) -> Report:
    """Read a bundle directory and verify it (streams events.jsonl; no Kafka).

    ``public_key_file`` (a PEM) replaces the bundle's own key. Raises BundleError if the
    directory is not a bundle at all.
    """
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        key_pem = (public_key_file or directory / "public_key.pem").read_bytes()
        checkpoints = [c for c in _jsonl(directory / "checkpoints.jsonl")]
    except (OSError, ValueError) as exc:
        raise BundleError(f"{directory} is not a readable audit bundle "
                          f"({type(exc).__name__})") from exc
    try:
        public_key = load_public_key_pem(key_pem)
    except CheckpointError as exc:
        raise BundleError(f"{directory}: {exc}") from exc
    return verify_bundle(manifest, [c if c is not None else {} for c in checkpoints],
                         _jsonl(directory / "events.jsonl"), public_key,
                         expected_key_id=expected_key_id)


# -- export (Kafka adapter) -----------------------------------------------------------------

README = """leadhub audit bundle ({format})

A window of the hub's event log with what is needed to verify it offline.
Verify with: leadhub audit verify <this directory> [--key-id HEX]

{doc}
Leaf encoding: {leaf}
"""


def export_bundle(bootstrap: str, events_topic: str, checkpoints_topic: str,
                  public_key: bytes, window_from: datetime, window_to: datetime,
                  directory: Path, schemas_dir: Path) -> dict[str, Any]:
    """Write a bundle for records received in [window_from, window_to]; return its manifest.

    Reads lead.events twice (hashes from offset 0, then the exported records); keeps every
    leaf hash up to the covering checkpoint in temporary files (~64 bytes of disk per record,
    memory bounded whatever the log's length). Raises SetupError when no
    checkpoint covers the window yet, BundleError when the directory is not empty.
    """
    from consumers.audit.kafka_log import TopicReader
    from schemas.canonical import CANONICAL_SCHEMA, decode_canonical
    from schemas.errors import HubError

    if directory.exists() and any(directory.iterdir()):
        raise BundleError(f"{directory} is not empty: export into a new directory")
    kid = key_id(public_key)
    published, _ = read_checkpoints(bootstrap, checkpoints_topic)
    mine = [c for c in published if c.topic == events_topic and signature_valid(c, public_key)]
    if not mine:
        raise SetupError(f"no checkpoint signed by key {kid} on {checkpoints_topic}: run "
                         "`leadhub audit checkpoint --once` first")
    leaves: dict[int, LeafHashes] = {}
    first_in: dict[int, int] = {}
    last_in: dict[int, int] = {}
    with TopicReader(bootstrap, events_topic, client_id="leadhub-audit-export") as reader, \
            HashFiles() as hash_files:
        end_now = reader.end_offsets()
        limit = {p: max(c.sizes().get(p, 0) for c in mine) for p in end_now}
        for p in end_now:
            leaves[p] = LeafHashes(new_level=hash_files.column)
        for rec in reader.read(end_now):
            if rec.offset < limit[rec.partition]:
                if rec.offset != len(leaves[rec.partition]):
                    raise BundleError(f"{events_topic} partition {rec.partition}: offsets are "
                                      f"not contiguous at {rec.offset}")
                leaves[rec.partition].append(record_leaf_hash(
                    events_topic, rec.partition, rec.offset, rec.key, rec.value))
            try:
                received = decode_canonical(rec.value).received_at
            except HubError:
                continue
            if window_from <= received <= window_to:
                first_in.setdefault(rec.partition, rec.offset)
                last_in[rec.partition] = rec.offset
        start_needed = {p: first_in.get(p, end_now[p]) for p in end_now}
        end_needed = {p: last_in[p] + 1 if p in last_in else 0 for p in end_now}
        anchor_i = None
        for i, c in enumerate(mine):
            if all(c.sizes().get(p, 0) <= start_needed[p] for p in end_now):
                anchor_i = i
        cover_i = next((i for i, c in enumerate(mine)
                        if (anchor_i is None or i >= anchor_i)
                        and all(c.sizes().get(p, 0) >= end_needed[p] for p in end_now)), None)
        if cover_i is None:
            raise SetupError("no checkpoint covers the window's last record yet: run "
                             "`leadhub audit checkpoint --once` and export again")
        chosen = mine[anchor_i if anchor_i is not None else cover_i:cover_i + 1]
        covering = chosen[-1]
        start = {p: (chosen[0].sizes().get(p, 0) if anchor_i is not None else 0)
                 for p in end_now}
        end = {p: covering.sizes().get(p, 0) for p in end_now}
        for c in chosen:
            for p, size in c.sizes().items():
                if not start.get(p, 0) <= size <= end.get(p, 0) or (
                        leaves[p].root(size) != c.head(p).root):  # type: ignore[union-attr]
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
        with (directory / "events.jsonl").open("w") as out:
            for p in sorted(end):
                if start[p] >= end[p]:
                    continue
                for rec in reader.read({p: end[p]}, {p: start[p]}):
                    proof = leaves[p].inclusion_proof(rec.offset, end[p])
                    out.write(json.dumps({
                        "partition": p, "offset": rec.offset,
                        "key": base64.b64encode(rec.key).decode() if rec.key is not None
                        else None,
                        "value": base64.b64encode(rec.value).decode(),
                        "proof": [h.hex() for h in proof]}, separators=(",", ":")) + "\n")
        frontiers = {p: [h.hex() for h in leaves[p].frontier(start[p])] for p in end}
    manifest = {
        "format": BUNDLE_FORMAT, "topic": events_topic, "key_id": kid,
        "window": {"from": window_from.astimezone(UTC).isoformat(),
                   "to": window_to.astimezone(UTC).isoformat()},
        "exported_at": datetime.now(UTC).isoformat(),
        "anchored": anchor_i is not None,
        "partitions": {str(p): {"start": start[p], "end": end[p],
                                "frontier": frontiers[p]}
                       for p in sorted(end)},
        "consistency": consistency,
        "leaf_encoding": LEAF_ENCODING,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    with (directory / "checkpoints.jsonl").open("wb") as out:
        for c in chosen:
            out.write(canonical_json(c.to_json()) + b"\n")
    (directory / "public_key.pem").write_bytes(public_key_pem(public_key))
    (directory / "schemas").mkdir()
    for avsc in sorted(schemas_dir.glob("*.avsc")):
        shutil.copy2(avsc, directory / "schemas" / avsc.name)
    (directory / "schemas" / "CanonicalRecord.avsc").write_text(
        json.dumps(CANONICAL_SCHEMA, indent=2))
    (directory / "README.txt").write_text(README.format(
        format=BUNDLE_FORMAT, doc=__doc__ or "", leaf=LEAF_ENCODING))
    return manifest
