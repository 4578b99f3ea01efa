"""A synthetic audit bundle (no broker) and the ways the bundle tests tamper with bundles.

:func:`synthetic_export` is an honest export of a gapped, transactional-looking log
(``OFFSETS``: committed offsets with holes where markers and aborted records sit) as parsed
content; :func:`write_synthetic_bundle` writes it as a bundle with the exporter's own writer
(:func:`finish_bundle`), sealed. ``FILES``, ``FIELDS`` and ``LEAF_FIELDS`` are the files and
manifest fields such a bundle actually has, so the cases generated from them cover a file or
field added to the format without anyone listing it. :func:`flip_byte` and
:func:`edit_manifest` tamper with a bundle; :func:`files_named` and :func:`fields_named` say
what a report blamed.
"""

from __future__ import annotations

import base64
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.audit.bundle_export import finish_bundle, schema_files
from consumers.audit.bundle_format import EVENTS_FILE, MANIFEST_FILE, bundle_manifest, event_line
from consumers.audit.bundle_report import Report
from consumers.audit.bundle_seal import field_digests, inventory
from consumers.audit.checkpoints import (
    Checkpoint,
    Head,
    key_id,
    public_bytes,
    record_leaf_hash,
    sign_checkpoint,
)
from consumers.audit.merkle import LeafHashes
from tests.factories import ROOT

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
TOPIC = "t.lead.events"
#: committed offsets per partition: partition 0 starts with an aborted record (offset 0), every
#: transaction ends in a marker, 7-8 and 12-13 are aborted records and their marker
OFFSETS = {0: [1, 2, 3, 5, 6, 9, 10, 11, 14, 15], 1: [0, 4, 8, 16]}
#: the checkpoints' end offsets: anchor, one in the middle, covering
CUTS = [{0: 4, 1: 2}, {0: 8, 1: 6}, {0: 17, 1: 17}]
SCHEMAS_DIR = ROOT / "schemas" / "avro"


def b64(data: bytes) -> str:
    """``data`` in base64, as events.jsonl holds keys and values."""
    return base64.b64encode(data).decode()


def _value(p: int, offset: int) -> bytes:
    return f"value {p}/{offset}".encode()


def synthetic_export(cuts: list[dict[int, int]] = CUTS,
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
                    "value": b64(_value(p, offs[leaf])),
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


def write_synthetic_bundle(directory: Path, key: Ed25519PrivateKey | None = None) -> Path:
    """A bundle of ``OFFSETS`` written by the exporter's own writer; returns ``directory``."""
    key = key or Ed25519PrivateKey.generate()
    manifest, checkpoints, events, _ = synthetic_export(key=key)
    directory.mkdir(parents=True)
    (directory / EVENTS_FILE).write_text("".join(
        event_line(e["partition"], e["offset"], e["leaf"], None, base64.b64decode(e["value"]),
                   [bytes.fromhex(h) for h in e["proof"]]) for e in events))
    finish_bundle(directory, key, manifest, [Checkpoint.from_json(c) for c in checkpoints],
                  schema_files(SCHEMAS_DIR))
    return directory


def field_value(manifest: Any, path: str) -> Any:
    """The value of the manifest field at ``path`` (``window.from``)."""
    for name in path.split("."):
        manifest = manifest[name]
    return manifest


def _layout() -> tuple[list[str], list[str], list[str]]:
    """(files, manifest field paths, the paths whose value is not an object) of a bundle as the
    exporter's writer makes it: what the parametrized cases are generated from."""
    with tempfile.TemporaryDirectory(prefix="leadhub-bundle-layout-") as tmp:
        bundle = write_synthetic_bundle(Path(tmp) / "bundle")
        files, strays = inventory(bundle)
        manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert not strays
    fields = sorted(field_digests(manifest))
    return sorted(files), fields, [f for f in fields
                                   if not isinstance(field_value(manifest, f), dict)]


FILES, FIELDS, LEAF_FIELDS = _layout()


def flip_byte(path: Path, where: str) -> None:
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


def edit_manifest(bundle: Path, path: str, how: str) -> None:
    """``change`` the value at ``path``, ``remove`` it or ``add`` it (a new field)."""
    target = bundle / MANIFEST_FILE
    manifest = json.loads(target.read_text())
    *parents, name = path.split(".")
    holder = field_value(manifest, ".".join(parents)) if parents else manifest
    if how == "change":
        holder[name] = _changed(holder[name])
    elif how == "remove":
        del holder[name]
    else:
        assert name not in holder
        holder[name] = "added"
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True))  # as the writer does


def files_named(report: Report) -> set[str]:
    """The bundle files the report's failures name."""
    return {f.file for f in report.failures if f.file is not None}


def fields_named(report: Report) -> set[str]:
    """The manifest fields the report's failures name."""
    return {f.field for f in report.failures if f.field is not None}
