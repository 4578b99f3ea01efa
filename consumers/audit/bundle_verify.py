"""Verify an audit bundle's records and checkpoints: parsed content in, a Report out; no I/O.

:func:`verify_bundle` checks what :mod:`consumers.audit.bundle_format` ("Soundness")
requires: every checkpoint signed by the bundle's (or the pinned) key, successive checkpoints
consistent, each partition's prefix frontier folding to the anchor's signed root, each
record's inclusion proof in the covering tree, leaf indices without a hole, offsets increasing
and within every checkpoint's claim, every signed root reproduced. Each failure names its
partition and offset (or leaf index), or its checkpoint. The seal over the files is checked by
:mod:`consumers.audit.bundle_seal`; reading a directory is :mod:`consumers.audit.bundle_read`.
"""

from __future__ import annotations

import base64
import itertools
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consumers.audit.bundle_format import BUNDLE_FORMAT, MANIFEST_FILE, OLDER_FORMATS
from consumers.audit.bundle_report import Failure, Report
from consumers.audit.checkpoints import Checkpoint, key_id, record_leaf_hash, signature_valid
from consumers.audit.errors import CheckpointError
from consumers.audit.merkle import CompactTree, verify_consistency, verify_inclusion


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
