"""Audit bundles: export a window of ``lead.events`` with what verifies it; verify offline.

**Layout** of a bundle directory::

    manifest.json        format, topic, window, per partition {start, end, start_offset,
                         end_offset, frontier}, the consistency proofs between successive
                         checkpoints, the leaf encoding
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

Bundles of format 1 (leaf index = offset) are not read: their checkpoints do not verify
under format 2.

:func:`verify_bundle` is pure (parsed content in, a report out); :func:`read_bundle_and_verify`
and :func:`export_bundle` are the file and Kafka adapters.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.audit.checkpoints import (
    Checkpoint,
    deleted_prefixes,
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

BUNDLE_FORMAT = "leadhub-audit-bundle/2"
LEAF_ENCODING = ('b"LHLEAF1" || u16 len(topic) || topic || u32 partition || u64 offset || '
                 'u32 len(key) (0xFFFFFFFF: null) || key || u32 len(value) || value; '
                 'big-endian; leaf hash SHA-256(0x00 || leaf); one RFC 6962 tree per partition '
                 'over its committed records in offset order, leaf index = the ordinal of the '
                 'record (offsets increase, with gaps)')


# -- verification (pure) --------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """One thing that did not verify: where (partition and offset or leaf index, or checkpoint)
    and why. A missing record has no offset the verifier could know: it is named by its leaf
    index (and the reason gives the offsets it lies between)."""

    reason: str
    partition: int | None = None
    offset: int | None = None
    checkpoint: int | None = None
    leaf: int | None = None

    def describe(self) -> str:
        """``partition 2 offset 17: ...``, ``partition 2 leaf #9: ...`` or ``checkpoint #3:
        ...``."""
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
    if manifest.get("format") != BUNDLE_FORMAT:
        fail(Failure(f"not a {BUNDLE_FORMAT} manifest"))
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

    Reads lead.events (``read_committed``) twice: every record from offset 0 for the leaf
    hashes, counting the leaves below each checkpoint's end offsets, then the exported records,
    whose leaf index is their ordinal from the anchor's size on (each checked against the leaf
    hash of the first read). Keeps every leaf hash up to the covering checkpoint in temporary
    files (~64 bytes of disk per record, memory bounded whatever the log's length; plus a few
    integers per checkpoint). Raises SetupError when no checkpoint covers the window yet,
    BundleError when the directory is not empty or the log does not match the checkpoints.
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
    ends = [c.end_offsets() for c in mine]
    leaves: dict[int, LeafHashes] = {}
    #: per partition: the checkpoints' end offsets, ascending, and the leaves below each
    bounds: dict[int, list[int]] = {}
    below: dict[int, dict[int, int]] = {}
    first_in: dict[int, int] = {}
    last_in: dict[int, int] = {}
    with TopicReader(bootstrap, events_topic, client_id="leadhub-audit-export") as reader, \
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
                received = decode_canonical(rec.value).received_at
            except HubError:
                continue
            if window_from <= received <= window_to:
                first_in.setdefault(p, offset)
                last_in[p] = offset
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
        with (directory / "events.jsonl").open("w") as out:
            for p in sorted(end):
                if start[p] >= end[p]:
                    continue
                leaf = start[p]
                for rec in reader.read({p: end_offset[p]}, {p: start_offset[p]}):
                    hashed = record_leaf_hash(events_topic, p, rec.offset, rec.key, rec.value)
                    if leaf >= end[p] or leaves[p][leaf] != hashed:
                        raise BundleError(f"{events_topic} partition {p} changed during the "
                                          f"export (offset {rec.offset})")
                    proof = leaves[p].inclusion_proof(leaf, end[p])
                    out.write(json.dumps({
                        "partition": p, "offset": rec.offset, "leaf": leaf,
                        "key": base64.b64encode(rec.key).decode() if rec.key is not None
                        else None,
                        "value": base64.b64encode(rec.value).decode(),
                        "proof": [h.hex() for h in proof]}, separators=(",", ":")) + "\n")
                    leaf += 1
                if leaf != end[p]:
                    raise BundleError(f"{events_topic} partition {p} changed during the "
                                      f"export ({leaf - start[p]} of {end[p] - start[p]} "
                                      "records read again)")
        frontiers = {p: [h.hex() for h in leaves[p].frontier(start[p])] for p in end}
    manifest = {
        "format": BUNDLE_FORMAT, "topic": events_topic, "key_id": kid,
        "window": {"from": window_from.astimezone(UTC).isoformat(),
                   "to": window_to.astimezone(UTC).isoformat()},
        "exported_at": datetime.now(UTC).isoformat(),
        "anchored": anchor_i is not None,
        "partitions": {str(p): {"start": start[p], "end": end[p],
                                "start_offset": start_offset[p], "end_offset": end_offset[p],
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
