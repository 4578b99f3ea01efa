"""Pure parts of replay: the view digest, first differences, and the replayer's dispatch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from consumers.audit.digest import digest_row_texts, digest_rows, first_differences
from consumers.audit.replay import Replayer
from processors.offline import project_events
from processors.projector import Projector
from processors.view import ViewRow, apply_changes
from producers.simulator import simulate
from schemas.canonical import CanonicalRecord
from schemas.catalog import load_catalog
from schemas.codec import encode
from tests.factories import SITE

CATALOG = load_catalog()


def _row(event_id: str, categories: list[str], value: str = "x") -> dict[str, object]:
    return {"event_id": event_id, "type": "T", "categories": categories,
            "fields": {"f": value}}


def test_digest_is_order_checked_and_content_sensitive() -> None:
    rows = [("a", _row("1", ["HOUSING"])), ("a", _row("2", [])), ("b", _row("1", []))]
    same = digest_rows(iter(rows))
    assert same == digest_rows(iter(list(rows)))
    assert same.rows == 3
    changed = [rows[0], ("a", _row("2", [], value="y")), rows[2]]
    assert digest_rows(changed).sha256 != same.sha256
    with pytest.raises(ValueError):
        digest_rows([rows[1], rows[0]])


def test_digest_of_stored_texts_equals_the_digest_of_the_rows() -> None:
    values = ["x", "Maison Cèdre — été", "tab\tand\u0001control", "back\\slash \\u00e9",
              "emoji \U0001f600", 1.5e-7, 12345678901234567890, None, True]
    rows: list[tuple[str, dict[str, object]]] = [
        ("défense" if i % 2 else "a",
         {"event_id": f"{i:03d}", "type": "T", "categories": ["HOUSING"], "fields": {"f": v}})
        for i, v in enumerate(values)]
    rows.sort(key=lambda r: (r[0], str(r[1]["event_id"])))
    texts = [(r, str(row["event_id"]), json.dumps(row, sort_keys=True, separators=(",", ":")))
             for r, row in rows]
    assert digest_row_texts(texts) == digest_rows(rows)
    with pytest.raises(ValueError):
        digest_row_texts([texts[1], texts[0]])


def test_first_differences_name_ids_and_categories_only() -> None:
    live = [("a", _row("1", ["HOUSING"])), ("a", _row("2", ["REFERRAL"], "secret"))]
    replay = [("a", _row("2", ["REFERRAL"], "other")), ("b", _row("3", []))]
    found = first_differences(live, replay)
    assert [(d.recipient, d.event_id, d.kind) for d in found] == [
        ("a", "1", "only_left"), ("a", "2", "differs"), ("b", "3", "only_right")]
    text = " ".join(d.describe() for d in found)
    assert "secret" not in text and "other" not in text and "REFERRAL" in text


def test_replayer_with_a_final_clock_equals_the_offline_projection() -> None:
    """Ticking only the due participants gives the view of ticking everyone."""
    start = datetime(2026, 1, 5, tzinfo=UTC)
    events = sorted(simulate(SITE, CATALOG, 25, 150, 3, start),
                    key=lambda e: (e.occurred_at, e.event_id))
    end = events[-1].occurred_at + timedelta(days=40)
    replayer = Replayer(Projector(SITE, CATALOG), CATALOG)
    view: dict[str, dict[str, ViewRow]] = {}
    for offset, event in enumerate(events):
        record = CanonicalRecord("EVENT", event.occurred_at, event.source_partner or "", "in", 0,
                                 offset, encode(event, CATALOG))
        apply_changes(view, replayer.apply(0, offset, event.participant_id.encode(), record))
    tick = CanonicalRecord("CLOCK", end, "hub", "", -1, -1, b"")
    apply_changes(view, replayer.apply(0, len(events), None, tick))
    expected = project_events(iter(events), Projector(SITE, CATALOG), at=end)
    assert {r: set(rows) for r, rows in view.items()} == {
        r: set(rows) for r, rows in expected.items()}
    assert view == expected
