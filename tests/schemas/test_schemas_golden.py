"""Golden bytes: the exact single-object encoding of one event per type and version is pinned.

A failure here means the wire format changed. That is only ever right together with a new
schema version; never regenerate the golden file to make this pass.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import event_from_json, event_to_json
from tests.factories import ROOT

GOLDEN = ROOT / "tests" / "golden" / "schemas_golden.json"
CASES: list[dict[str, Any]] = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]


def _id(case: dict[str, Any]) -> str:
    return f"{case['type']}.v{case['version']}"


def test_every_type_version_has_a_golden_case() -> None:
    catalog = load_catalog()
    pinned = {(case["type"], case["version"]) for case in CASES}
    assert pinned == {(et.name, et.version) for et in catalog.all_versions()}


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_encoding_is_pinned(case: dict[str, Any]) -> None:
    catalog = load_catalog()
    event = event_from_json(case["event"], catalog)
    assert encode(event, catalog, case["version"]).hex() == case["hex"]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_header_is_marker_plus_little_endian_fingerprint(case: dict[str, Any]) -> None:
    catalog = load_catalog()
    data = bytes.fromhex(case["hex"])
    event_type = catalog.get(case["type"], case["version"])
    assert event_type.fingerprint == case["fingerprint"]
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == bytes.fromhex(case["fingerprint"])
    assert catalog.by_fingerprint(data[2:10]) == event_type


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_pinned_bytes_decode_to_the_event(case: dict[str, Any]) -> None:
    catalog = load_catalog()
    event = decode(bytes.fromhex(case["hex"]), catalog)
    assert event == event_from_json(case["event"], catalog)
    assert event_to_json(event) == case["event"]
