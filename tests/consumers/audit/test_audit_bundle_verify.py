"""The verifier's offset rules on a synthetic gapped log (no broker).

``lead.events`` is written in Kafka transactions, so its offsets have gaps (commit and abort
markers, aborted records) and the trees' leaves are the committed records: an honest export of
such a log verifies by leaf index, and a missing record, a checkpoint whose end offset
contradicts its leaves, end offsets that go back, a moved end offset and a format 1 checkpoint
each fail, naming the leaf, offset or checkpoint. The same checks on a real transactional log,
tampered with, are in tests/consumers/audit/test_audit_bundle_export.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from consumers.audit.bundle_report import Report
from consumers.audit.bundle_verify import verify_bundle
from consumers.audit.checkpoints import Checkpoint, Head, signature_valid
from consumers.audit.errors import CheckpointError
from tests.synthetic_bundle import CUTS, synthetic_export


def _verify(manifest: Any, checkpoints: Any, events: Any, public: bytes) -> Report:
    return verify_bundle(manifest, checkpoints, events, public)


def test_a_gapped_log_verifies_by_leaf_index() -> None:
    manifest, checkpoints, events, public = synthetic_export()
    report = _verify(manifest, checkpoints, events, public)
    assert report.ok, [f.describe() for f in report.failures]
    assert report.records == len(events) == 10 and report.checkpoints == 3
    assert manifest["partitions"]["0"]["start"] == 3  # offsets 1, 2, 3 before end offset 4


def test_a_missing_record_is_named_by_leaf_and_offset_range() -> None:
    manifest, checkpoints, events, public = synthetic_export()
    last = [e for e in events if e["partition"] == 1][-1]  # leaf #3, offset 16
    report = _verify(manifest, checkpoints, [e for e in events if e is not last], public)
    assert report.first is not None
    assert (report.first.partition, report.first.leaf, report.first.offset) == (1, 3, None)
    assert "missing" in report.first.reason and "[9, 17)" in report.first.reason


def test_a_checkpoint_whose_end_offset_contradicts_its_leaves_fails() -> None:
    # checkpoint #1 holds offsets 1..6 of partition 0 (5 leaves) yet claims to end at 6
    manifest, checkpoints, events, public = synthetic_export(lie={(1, 0): 6})
    report = _verify(manifest, checkpoints, events, public)
    assert report.first is not None
    assert (report.first.partition, report.first.offset) == (0, 6)
    assert "checkpoint #1" in report.first.reason
    # ... or claims to end at 10, past the leaf at offset 9 that it does not hold
    manifest, checkpoints, events, public = synthetic_export(lie={(1, 0): 10})
    report = _verify(manifest, checkpoints, events, public)
    assert report.first is not None
    assert (report.first.partition, report.first.offset) == (0, 9)
    assert "below that offset" in report.first.reason


def test_end_offsets_never_go_back() -> None:
    manifest, checkpoints, events, public = synthetic_export(
        cuts=[CUTS[0], {0: 8, 1: 15}, {0: 17, 1: 12}])
    report = _verify(manifest, checkpoints, events, public)
    assert report.first is not None and report.first.checkpoint == 2
    assert "end offsets 15 -> 12" in report.first.reason


def test_the_end_offset_is_signed_and_format_1_is_refused() -> None:
    _, checkpoints, _, public = synthetic_export()
    cp = Checkpoint.from_json(checkpoints[1])
    assert signature_valid(cp, public)
    moved = tuple(Head(h.partition, h.end_offset + 1, h.size, h.root) for h in cp.heads)
    assert not signature_valid(Checkpoint(cp.topic, cp.timestamp, moved, cp.key_id,
                                          cp.signature), public)
    old = dict(checkpoints[1], format="leadhub-checkpoint/1")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        Checkpoint.from_json(old)
