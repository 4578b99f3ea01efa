"""Property tests: events generated from the schemas survive Avro and JSON round trips."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from fastavro.schema import parse_schema
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.catalog import Catalog, EventType, load_catalog
from schemas.codec import decode, encode, event_id_of, stamp_source_partner
from schemas.errors import ContractError
from schemas.event import (
    PARTICIPANT_ID_PATTERN,
    Event,
    event_from_json,
    event_to_json,
    read_jsonl,
    write_jsonl,
)

CATALOG = load_catalog()
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
TIMESTAMPS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


def strategy_for(schema: Any, named: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a fastavro-parsed schema node, as fastavro returns them."""
    if isinstance(schema, list):
        return st.one_of([strategy_for(branch, named) for branch in schema])
    if isinstance(schema, str):
        if schema in named:
            return strategy_for(named[schema], named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "string": TEXT,
            "bytes": st.binary(max_size=8),
            "double": st.floats(allow_nan=False),
        }[schema]
    if schema.get("logicalType") == "timestamp-micros":
        return TIMESTAMPS
    if schema.get("logicalType") == "date":
        return st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
    kind = schema["type"]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(strategy_for(schema["items"], named), max_size=3)
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: strategy_for(f["type"], named) for f in schema["fields"]}
        )
    return strategy_for(kind, named)


def event_strategy(event_type: EventType) -> st.SearchStrategy[Event]:
    named: dict[str, Any] = {}
    parse_schema(event_type.schema, named_schemas=named)
    payload = next(f["type"] for f in event_type.schema["fields"] if f["name"] == "payload")
    return st.builds(
        Event,
        event_id=st.uuids(version=4).map(str),
        type=st.just(event_type.name),
        participant_id=st.from_regex(f"\\A{PARTICIPANT_ID_PATTERN}\\Z"),
        occurred_at=TIMESTAMPS,
        payload=strategy_for(payload, named),
        source_partner=st.none() | TEXT,
    )


LATEST_EVENTS = st.one_of([event_strategy(CATALOG.latest(name)) for name in CATALOG.types()])
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _roundtrip_json(event: Event, catalog: Catalog) -> Event:
    text = json.dumps(event_to_json(event))
    return event_from_json(json.loads(text), catalog)


@SETTINGS
@given(LATEST_EVENTS)
def test_avro_round_trip_is_lossless(event: Event) -> None:
    assert decode(encode(event, CATALOG), CATALOG) == event


@SETTINGS
@given(LATEST_EVENTS)
def test_json_round_trip_is_lossless(event: Event) -> None:
    assert _roundtrip_json(event, CATALOG) == event


@SETTINGS
@given(LATEST_EVENTS)
def test_json_and_avro_agree(event: Event) -> None:
    via_json = _roundtrip_json(event, CATALOG)
    assert decode(encode(via_json, CATALOG), CATALOG) == event


@settings(max_examples=50, deadline=None)
@given(st.lists(LATEST_EVENTS, max_size=5))
def test_json_lines_round_trip(events: list[Event]) -> None:
    buffer = io.StringIO()
    assert write_jsonl(events, buffer) == len(events)
    buffer.seek(0)
    assert list(read_jsonl(buffer, CATALOG)) == events


@SETTINGS
@given(st.sampled_from(CATALOG.all_versions()), st.binary(max_size=64))
def test_arbitrary_bodies_raise_only_contract_errors(event_type: EventType, body: bytes) -> None:
    data = b"\xc3\x01" + bytes.fromhex(event_type.fingerprint) + body
    try:
        event = decode(data, CATALOG)
    except ContractError:
        return
    assert decode(encode(event, CATALOG, event_type.version), CATALOG) == event


PARTNER_IDS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=80)


@SETTINGS
@given(LATEST_EVENTS, PARTNER_IDS)
def test_stamping_the_source_in_the_bytes_is_encoding_the_stamped_event(
        event: Event, partner: str) -> None:
    """The validator's stamp (:func:`stamp_source_partner`) is what encoding gave: the
    timestamps reach 1 AD and 9999 AD (nine-byte longs), the partner ids 80 characters."""
    stamped = stamp_source_partner(encode(event, CATALOG), CATALOG, partner)
    if event.source_partner not in (None, partner):
        assert stamped is None
    else:
        assert stamped == encode(dataclasses.replace(event, source_partner=partner), CATALOG)


@SETTINGS
@given(LATEST_EVENTS)
def test_an_unsourced_encoding_is_the_events_without_source_and_names_its_id(
        event: Event) -> None:
    """What the partner SDK sends: ``unsourced`` writes no source whatever the event names,
    and :func:`event_id_of` reads the id back from the bytes alone (a failed delivery's)."""
    unsourced = encode(event, CATALOG, unsourced=True)
    assert unsourced == encode(dataclasses.replace(event, source_partner=None), CATALOG)
    assert event_id_of(unsourced) == event.event_id


def test_the_id_of_bytes_that_are_not_an_event_is_unknown() -> None:
    assert event_id_of(b"") == event_id_of(b"\xc3\x01" + bytes(8) + b"\x7f") == "unknown"
    assert event_id_of(b"\xc3\x01" + bytes(8) + b"\x04\xff\xfe") == "unknown"


@SETTINGS
@given(st.sampled_from(["ConsentGranted", "ReferralMade"]).flatmap(
    lambda name: event_strategy(CATALOG.latest(name))), PARTNER_IDS)
def test_an_older_version_is_not_stamped_in_its_bytes(event: Event, partner: str) -> None:
    try:
        older = encode(event, CATALOG, 1)
    except ContractError:  # newer fields that the first version cannot hold
        assume(False)
    assert stamp_source_partner(older, CATALOG, partner) is None
