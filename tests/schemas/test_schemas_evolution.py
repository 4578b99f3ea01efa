"""Schema evolution: ReferralMade v1 and v2 read each other's data; the resolution rules work."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro.schema import parse_schema

from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.compat import resolution_problems
from schemas.errors import InvalidField, RejectReason
from schemas.event import Event
from tests.factories import participant_id

T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
V1_PAYLOAD = {
    "door": "SOCIAL_CONTACT",
    "offense_category": None,
    "charges_held": False,
    "referring_officer": "Badge 12",
    "area": "Rainier Beach",
}


def _event(payload: dict[str, Any]) -> Event:
    return Event("0b0e6c1e-2f7a-4c55-9d57-3a1f0e9b7c01", "ReferralMade", participant_id("LH-7"),
                 T0, payload)


def test_the_catalog_keeps_two_versions_of_referral_made() -> None:
    catalog = load_catalog()
    assert catalog.latest("ReferralMade").version == 2
    assert catalog.get("ReferralMade", 1).fingerprint != catalog.get("ReferralMade", 2).fingerprint


def test_v1_written_is_read_as_v2_with_the_default() -> None:
    catalog = load_catalog()
    data = encode(_event(V1_PAYLOAD), catalog, version=1)
    assert data[2:10] == bytes.fromhex(catalog.get("ReferralMade", 1).fingerprint)
    event = decode(data, catalog)
    assert event.payload == {**V1_PAYLOAD, "warm_handoff_at": None}


def test_v2_written_is_read_as_v1_without_the_new_field() -> None:
    catalog = load_catalog()
    handoff = datetime(2025, 3, 4, 6, 0, tzinfo=UTC)
    data = encode(_event({**V1_PAYLOAD, "warm_handoff_at": handoff}), catalog)
    assert data[2:10] == bytes.fromhex(catalog.get("ReferralMade", 2).fingerprint)
    old_reader = decode(data, catalog, reader_version=1)
    assert old_reader.payload == V1_PAYLOAD
    assert decode(data, catalog).payload["warm_handoff_at"] == handoff


def test_writing_v1_drops_a_new_field_only_when_it_holds_its_default() -> None:
    catalog = load_catalog()
    with_default = _event({**V1_PAYLOAD, "warm_handoff_at": None})
    assert decode(encode(with_default, catalog, version=1), catalog) == with_default
    lossy = dataclasses.replace(with_default, payload={**V1_PAYLOAD, "warm_handoff_at": T0})
    with pytest.raises(InvalidField) as info:
        encode(lossy, catalog, version=1)
    assert info.value.reason is RejectReason.INVALID_FIELD
    assert info.value.field_path == "payload.warm_handoff_at"


def _record(*fields: dict[str, Any]) -> Any:
    return parse_schema({"type": "record", "name": "R", "fields": list(fields)})


def test_adding_a_field_without_default_breaks_backward_compatibility() -> None:
    old = _record({"name": "a", "type": "string"})
    new = _record({"name": "a", "type": "string"}, {"name": "b", "type": "int"})
    assert resolution_problems(new, old) == []  # old readers ignore b
    assert resolution_problems(old, new) == [
        "b: reader field has no default and the writer lacks it"
    ]


def test_removing_an_enum_symbol_breaks_reading_old_data() -> None:
    def enum(*symbols: str) -> Any:
        kind = {"type": "enum", "name": "E", "symbols": list(symbols)}
        return _record({"name": "e", "type": kind})

    assert resolution_problems(enum("A"), enum("A", "B")) == []
    (problem,) = resolution_problems(enum("A", "B"), enum("A"))
    assert "lacks symbols B" in problem


def test_promotions_follow_the_avro_rules() -> None:
    def typed(kind: Any) -> Any:
        return _record({"name": "x", "type": kind})

    assert resolution_problems(typed("int"), typed("long")) == []
    assert resolution_problems(typed("string"), typed("bytes")) == []
    assert resolution_problems(typed("string"), typed(["null", "string"])) == []
    assert resolution_problems(typed("long"), typed("int")) == [
        "x: writer type long cannot be read as int"
    ]
    assert resolution_problems(typed(["null", "string"]), typed("string")) == [
        "x: writer type null cannot be read as string"
    ]
    micros = {"type": "long", "logicalType": "timestamp-micros"}
    assert "logical type changed" in resolution_problems(typed("long"), typed(micros))[0]
