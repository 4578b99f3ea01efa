"""An independent implementation (the official pure-Python ``avro`` package) agrees with us:
it decodes the bodies we write, its writes decode with our codec, and it computes the same
CRC-64-AVRO fingerprints from the same .avsc files."""

from __future__ import annotations

import io
import json
from typing import Any

import avro.io
import avro.schema
import pytest
from fastavro.schema import to_parsing_canonical_form

from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import Event, event_from_json
from tests.factories import ROOT

GOLDEN = ROOT / "tests" / "golden" / "schemas_golden.json"
CASES: list[dict[str, Any]] = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]


def _avro_schema(type_name: str, version: int) -> avro.schema.Schema:
    path = load_catalog().get(type_name, version).path
    return avro.schema.parse(path.read_text(encoding="utf-8"))


def _record(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "participant_id": event.participant_id,
        "occurred_at": event.occurred_at,
        "source_partner": event.source_partner,
        "payload": dict(event.payload),
    }


def _id(case: dict[str, Any]) -> str:
    return f"{case['type']}.v{case['version']}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_avro_package_reads_our_body(case: dict[str, Any]) -> None:
    catalog = load_catalog()
    event = event_from_json(case["event"], catalog)
    data = encode(event, catalog, case["version"])
    schema = _avro_schema(case["type"], case["version"])
    decoded = avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    expected = _record(event)
    if case["version"] < catalog.latest(case["type"]).version:
        names = {f.name for f in catalog.get(case["type"], case["version"]).fields}
        expected["payload"] = {k: v for k, v in expected["payload"].items() if k in names}
    assert decoded == expected


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_our_codec_reads_avro_package_body(case: dict[str, Any]) -> None:
    catalog = load_catalog()
    event = decode(bytes.fromhex(case["hex"]), catalog)  # a valid event of this type
    schema = _avro_schema(case["type"], case["version"])
    record = _record(event)
    names = {f.name for f in catalog.get(case["type"], case["version"]).fields}
    record["payload"] = {k: v for k, v in record["payload"].items() if k in names}
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(body))
    header = b"\xc3\x01" + bytes.fromhex(case["fingerprint"])
    assert header + body.getvalue() == bytes.fromhex(case["hex"])
    assert decode(header + body.getvalue(), catalog) == event


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_avro_package_agrees_on_the_fingerprint(case: dict[str, Any]) -> None:
    """Same canonical form (modulo a known avro bug) and the same CRC-64-AVRO.

    The spec's [PRIMITIVES] and [STRIP] rules make ``{"type": "long", "logicalType":
    "timestamp-micros"}`` canonically ``"long"`` (as Java and fastavro do); the Python ``avro``
    package 1.12 leaves ``{"type":"long"}``, so its ``fingerprint()`` differs for any schema with
    a logical type. Partners must not fingerprint our schemas with it.
    """
    schema = _avro_schema(case["type"], case["version"])
    theirs = schema.canonical_form
    for primitive in ("int", "long"):
        theirs = theirs.replace(f'{{"type":"{primitive}"}}', f'"{primitive}"')
    ours = to_parsing_canonical_form(
        json.loads(load_catalog().get(case["type"], case["version"]).path.read_text())
    )
    assert theirs == ours
    assert avro.schema._crc_64_fingerprint(ours.encode()).hex() == case["fingerprint"]
