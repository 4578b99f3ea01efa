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

# This module holds the format's names and constants, the writers of manifest.json and of a
# line of events.jsonl, and README.txt. The docstring above is the format's specification and
# is written verbatim into every bundle's README.txt (:func:`readme_text`): editing it changes
# what the exporter writes.

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

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

README = """leadhub audit bundle ({format})

A window of the hub's event log with what is needed to verify it offline.
Verify with: leadhub audit verify <this directory> [--key-id HEX]

{doc}
Leaf encoding: {leaf}
"""


def readme_text() -> str:
    """The content of a bundle's README.txt: the layout (this module's doc), how to verify, the
    leaf encoding."""
    return README.format(format=BUNDLE_FORMAT, doc=__doc__ or "", leaf=LEAF_ENCODING)


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
