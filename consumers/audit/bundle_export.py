"""Export an audit bundle from Kafka, sealed with the hub's signing key (the format:
:mod:`consumers.audit.bundle_format`).

:func:`export_bundle` reads ``lead.events`` and the published checkpoints, and writes the
window's records with their inclusion proofs, the anchor and covering checkpoints and the
consistency proofs between them; it raises (SetupError, BundleError, EmptyWindowError) rather
than write a bundle that would not verify. :func:`finish_bundle` writes every other file and
seals them all (tests call it alone, on a synthetic log); :func:`schema_files` gathers the
schemas a bundle carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.audit.bundle_format import (
    CHECKPOINTS_FILE,
    EVENTS_FILE,
    KEY_FILE,
    MANIFEST_FILE,
    README_FILE,
    SCHEMAS_DIR,
    SEAL_FILE,
    bundle_manifest,
    event_line,
    readme_text,
)
from consumers.audit.bundle_seal import inventory, seal_bytes
from consumers.audit.checkpoints import (
    Checkpoint,
    deleted_prefixes,
    key_id,
    public_bytes,
    public_key_pem,
    read_checkpoints,
    record_leaf_hash,
    signature_valid,
)
from consumers.audit.digest import canonical_json
from consumers.audit.errors import BundleError, EmptyWindowError, SetupError
from consumers.audit.hash_files import HashFiles
from consumers.audit.merkle import LeafHashes
from schemas.kafka_connection import KafkaConnection


def finish_bundle(directory: Path, private_key: Ed25519PrivateKey,
                  manifest: Mapping[str, Any], checkpoints: Sequence[Checkpoint],
                  schemas: Mapping[str, bytes]) -> None:
    """Write every file of a bundle but events.jsonl (written first, by the caller), then seal
    them all: manifest.json, checkpoints.jsonl, public_key.pem, ``schemas`` (file name ->
    content) under schemas/, README.txt, and last seal.json over every file then in
    ``directory`` (see :mod:`consumers.audit.bundle_format`). Raises BundleError if the
    directory holds anything but regular files."""
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True)
    (directory / MANIFEST_FILE).write_text(manifest_text)
    with (directory / CHECKPOINTS_FILE).open("wb") as out:
        for c in checkpoints:
            out.write(canonical_json(c.to_json()) + b"\n")
    (directory / KEY_FILE).write_bytes(public_key_pem(public_bytes(private_key.public_key())))
    (directory / SCHEMAS_DIR).mkdir()
    for name, content in sorted(schemas.items()):
        (directory / SCHEMAS_DIR / name).write_bytes(content)
    (directory / README_FILE).write_text(readme_text())
    files, strays = inventory(directory)
    if strays or SEAL_FILE in files:
        raise BundleError(f"{directory} holds {', '.join(strays) or SEAL_FILE}: export into a "
                          "new directory")
    # the fields as a verifier will read them back
    (directory / SEAL_FILE).write_bytes(seal_bytes(private_key, json.loads(manifest_text),
                                                   files))


def schema_files(schemas_dir: Path) -> dict[str, bytes]:
    """The schemas a bundle carries: every ``*.avsc`` of ``schemas_dir`` and
    CanonicalRecord.avsc (the envelope)."""
    from schemas.canonical import CANONICAL_SCHEMA

    found = {avsc.name: avsc.read_bytes() for avsc in sorted(schemas_dir.glob("*.avsc"))}
    found["CanonicalRecord.avsc"] = json.dumps(CANONICAL_SCHEMA, indent=2).encode()
    return found


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
