"""docs/wire-format.md, checked against the code.

The worked example is recomputed from the document's own inputs (its schema path, its event)
with the project's catalog and codec, and the fingerprint arithmetic with an independent
CRC-64-AVRO written from the Avro specification. The reason list, the topic list, the dead
letter headers, the size limits and the hub-topic formats are read from the code, so a code
change that the document does not follow fails here.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
from datetime import UTC, datetime

import fastavro
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka.partitioner.default import murmur2

from consumers.api.access_log import AccessRecord, Disclosure
from consumers.api.context import ApiConfig
from consumers.audit.checkpoints import Head, sign_checkpoint
from leadhub.cli_schemas import register
from leadhub.topics_admin import hub_topic_names
from processors.site import load_site
from processors.validate import DLQ_PREFIX_BYTES, MAX_EVENT_BYTES, dead_letter
from schemas.canonical import CANONICAL_SCHEMA, CanonicalRecord, encode_canonical
from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.errors import DeadLetterReason, RejectReason
from schemas.event import PARTICIPANT_ID_PATTERN, event_from_json, is_participant_id
from schemas.hub_formats import HUB_SCHEMA_DIR, hub_formats
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import ROOT

DOC = ROOT / "docs" / "wire-format.md"
SITE_FILE = ROOT / "config" / "site.example.yaml"
#: The modules that put records on lead.dlq.
DEAD_LETTER_WRITERS = ("processors/validate.py", "processors/kafka_validator.py",
                       "consumers/live_projector.py")


# -- reading the document ----------------------------------------------------------------------

def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text under the heading ``title``, up to the next heading of the same or a higher
    level."""
    text = doc_text()
    found = re.search(rf"^(#+) {re.escape(title)}[ \t]*$", text, re.M)
    assert found, f"docs/wire-format.md has no section {title!r}"
    rest = text[found.end():]
    end = re.search(rf"^#{{1,{len(found.group(1))}}} ", rest, re.M)
    return rest[:end.start()] if end else rest


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text`` (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[\s\-|:]+\|", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def row(text: str, label: str) -> list[str]:
    """The cells after the first cell of the table row whose first cell is ``label``."""
    for cells in table_rows(text):
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no table row {label!r} in the section")


def code(cell: str) -> list[str]:
    """The `inline code` spans of a cell."""
    return re.findall(r"`([^`]*)`", cell)


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the fenced code blocks of ``language`` in ``text``."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification defines it (independent of fastavro)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser(prog="leadhub")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.handler(args) == 0
    return capsys.readouterr().out


# -- the worked example ------------------------------------------------------------------------

def test_worked_example_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    """Schema -> canonical form -> CRC number -> wire bytes -> printed hex, as documented."""
    example = section("Worked example")
    path = re.search(r"\*\*1\. The schema\*\* is `(schemas/avro/(\w+)\.v(\d+)\.avsc)`", example)
    assert path, "the worked example names its schema file"
    raw = json.loads((ROOT / path.group(1)).read_text(encoding="utf-8"))
    canonical = to_parsing_canonical_form(raw)
    assert fenced(example, "text")[0].strip() == canonical
    assert f"({len(canonical.encode())} bytes of UTF-8" in example

    number = crc64_avro(canonical.encode())
    documented = code(row(example, "CRC-64-AVRO of the canonical form, as a number")[0])
    assert documented == [str(number), f"0x{number:016x}"]
    wire = number.to_bytes(8, "little")
    assert code(row(example, "the 8 wire bytes, little-endian")[0]) == [wire.hex(" ")]
    printed = code(row(example, "as printed by `leadhub schemas list` and in dead letters")[0])
    assert printed == [wire.hex()]

    catalog = load_catalog()
    event_type = catalog.get(path.group(2), int(path.group(3)))
    assert event_type.fingerprint == wire.hex()  # the project's fingerprint: LE bytes in hex
    assert wire.hex() != f"{number:016x}"  # ... which is not the number's hex
    listed = run_cli(["schemas", "list"], capsys)
    line = next(ln for ln in listed.splitlines() if ln.startswith(f"{event_type.name} "))
    assert f" v{event_type.version} " in line and wire.hex() in line


def test_worked_example_bytes() -> None:
    """The byte table is exactly what the codec writes for the document's event, and the
    document's offsets and length add up."""
    example = section("Worked example")
    catalog = load_catalog()
    event = event_from_json(json.loads(fenced(example, "json")[0]), catalog)
    data = encode(event, catalog)
    assert decode(data, catalog) == event

    documented = b""
    for cells in table_rows(example):
        if cells[0].isdigit() and code(cells[1]):
            assert int(cells[0]) == len(documented), f"offset {cells[0]} does not add up"
            documented += bytes.fromhex(code(cells[1])[0])
    assert documented == data
    assert f"**6. The record value**, {len(data)} bytes" in example
    assert data[2:10] == bytes.fromhex(catalog.latest(event.type).fingerprint)


def test_fingerprint_table_numbers() -> None:
    """Each documented schema's unsigned CRC, Java long and printed hex agree with the code."""
    catalog = load_catalog()
    rows = [cells for cells in table_rows(section("Single-object encoding"))
            if re.fullmatch(r"`\w+` v\d+", cells[0])]
    assert len(rows) >= 2
    seen_negative = False
    for cells in rows:
        name, version = re.fullmatch(r"`(\w+)` v(\d+)", cells[0]).groups()  # type: ignore[union-attr]
        event_type = catalog.get(name, int(version))
        canonical = to_parsing_canonical_form(json.loads(event_type.path.read_text()))
        number = crc64_avro(canonical.encode())
        wire = number.to_bytes(8, "little")
        assert code(cells[1]) == [str(number)]
        java_long = int.from_bytes(wire, "little", signed=True)
        assert code(cells[2]) == [str(java_long)]
        assert code(cells[3]) == [event_type.fingerprint] == [wire.hex()]
        seen_negative |= java_long < 0
    assert seen_negative, "show a schema whose Java long is negative"


def test_key_and_partition_example() -> None:
    """The documented key bytes and murmur2 partition are what the hub's partitioner gives."""
    partitioner = section("Partitioner")
    key = code(row(partitioner, "key")[0])[0]
    hashed = murmur2(key.encode())
    assert code(row(partitioner, "murmur2 of the key bytes")[0]) == [str(hashed), f"0x{hashed:x}"]
    partitions = int(re.search(r"for the (\d+) partitions", partitioner).group(1))  # type: ignore[union-attr]
    assert code(row(partitioner, f"partition of {partitions}")[0]) == [
        str((hashed & 0x7FFFFFFF) % partitions)]
    assert f"`{key.encode().hex(' ')}`" in section("Key")
    # The validator and the SDK ask librdkafka for the murmur2 one above, through the config
    # every hub producer shares (tests/producers/test_sdk.py checks it on the broker).
    assert KafkaConnection("b").librdkafka_producer_config()["partitioner"] == "murmur2_random"
    for producer in ("processors/kafka_validator.py", "producers/sdk.py"):
        assert "librdkafka_producer_config()" in (ROOT / producer).read_text()


def test_participant_id_format_is_the_codes() -> None:
    """The documented participant id format is the codec's, and the worked example's id is
    in it."""
    assert f"`{PARTICIPANT_ID_PATTERN}`" in section("Participant id")
    event = event_from_json(json.loads(fenced(section("Worked example"), "json")[0]),
                            load_catalog())
    assert is_participant_id(event.participant_id)


# -- lists generated from the code -------------------------------------------------------------

def test_reason_list_is_complete() -> None:
    """Every code the hub can put in lead.reason has a row, and no row names another code."""
    documented = {code(cells[0])[0] for cells in table_rows(section("Reason codes"))
                  if code(cells[0])}
    assert documented == {reason.value for reason in DeadLetterReason}
    assert {reason.value for reason in RejectReason} <= documented


def test_dead_letter_writers_use_the_enumeration() -> None:
    """No reason code is a stray literal: every CODE_LIKE string constant in the modules that
    write lead.dlq is a DeadLetterReason."""
    reasons = {reason.value for reason in DeadLetterReason}
    for module in DEAD_LETTER_WRITERS:
        tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
        literals = {node.value for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", node.value)}
        assert literals <= reasons, f"{module}: {sorted(literals - reasons)}"


def test_every_topic_is_documented() -> None:
    topics_section = section("Topics")
    documented = set(code(" ".join(cells[0] for cells in table_rows(topics_section))))
    names = TopicNames()
    properties = [getattr(names, attr) for attr, value in vars(TopicNames).items()
                  if isinstance(value, property)]
    fixed = {name for name in properties if re.fullmatch(r"[a-z.]+", name)}
    site = load_site(SITE_FILE)
    inbound = {names.inbound(p) for p in site.partner_ids()}
    assert set(hub_topic_names(names, site)) == fixed | inbound
    assert fixed <= documented
    assert names.inbound("x") == "lead.in.x" and "lead.in.<partner id>" in documented


def test_dead_letter_headers_are_documented() -> None:
    dlq = section("lead.dlq")
    documented = {code(cells[0])[0] for cells in table_rows(dlq)
                  if code(cells[0]) and code(cells[0])[0].startswith("lead.")
                  and not code(cells[0])[0].startswith("lead.in")}
    written: set[str] = set()
    for module in ("processors/validate.py", "consumers/live_projector.py"):
        tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
        written |= {node.value for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.fullmatch(r"lead\.[a-z0-9_.]+", node.value)}
    letter = dead_letter(topic="lead.in.harbor-cm", partition=0, offset=0,
                         value=b"x" * (MAX_EVENT_BYTES + 1), received_at=datetime.now(UTC),
                         reason="TOO_LARGE", message="m")
    written |= {name for name, _ in letter.headers}
    assert written == documented
    assert len(letter.value) == DLQ_PREFIX_BYTES


def test_size_limits_are_documented() -> None:
    sizes = section("Size limits")
    defaults = ApiConfig(database_url="", kafka="")
    for number in (MAX_EVENT_BYTES, DLQ_PREFIX_BYTES, defaults.max_event_bytes,
                   defaults.max_batch_bytes):
        assert f"{number:,}" in sizes, number
    assert f"{defaults.max_batch_items} events" in sizes
    assert f"{MAX_EVENT_BYTES // 1024} KiB" in sizes


# -- hub topic formats -------------------------------------------------------------------------

def test_published_canonical_record_is_the_schema_the_code_writes() -> None:
    (hub,) = [f for f in hub_formats() if f.name == "CanonicalRecord"]
    assert hub.path == HUB_SCHEMA_DIR / "CanonicalRecord.avsc"
    published = json.loads(hub.path.read_text(encoding="utf-8"))
    assert to_parsing_canonical_form(published) == to_parsing_canonical_form(CANONICAL_SCHEMA)
    record = CanonicalRecord(
        kind="EVENT", received_at=datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC),
        source_partner="harbor-cm", ingest_topic="lead.in.harbor-cm", ingest_partition=2,
        ingest_offset=41, event=b"\xc3\x01 any event bytes")
    data = encode_canonical(record)
    file_fingerprint = fingerprint(to_parsing_canonical_form(published), "CRC-64-AVRO")
    assert data[:2] == b"\xc3\x01" and data[2:10].hex() == file_fingerprint == hub.fingerprint
    parsed = fastavro.parse_schema(published, named_schemas={})
    body = io.BytesIO(data[10:])
    decoded = fastavro.schemaless_reader(body, parsed, None)
    assert body.tell() == len(data) - 10
    assert CanonicalRecord(**decoded) == record  # type: ignore[arg-type]

    events = section("lead.events")
    assert f"`{hub.fingerprint}`" in events
    documented_fields = [code(cells[0])[0] for cells in table_rows(events) if code(cells[0])]
    assert documented_fields == [f["name"] for f in published["fields"]]
    tick = encode_canonical(CanonicalRecord(
        kind="CLOCK", received_at=datetime(2026, 1, 5, 14, 30, tzinfo=UTC),
        source_partner="hub", ingest_topic="", ingest_partition=-1, ingest_offset=-1,
        event=b""))
    assert "2026-01-05T14:30:00Z" in events
    assert f"`{tick.hex(' ')}`" in events


def test_json_hub_formats_have_complete_field_tables() -> None:
    access = AccessRecord(user="jdoe", partner="harbor-cm", purpose="care_coordination",
                          at=datetime(2026, 1, 5, tzinfo=UTC), endpoint="/v1/participants",
                          participant_ids=("p-0123456789abcdef",), key_id="k1",
                          disclosures=(Disclosure("p-0123456789abcdef", "e-1",
                                                  ("c-1",)),)).to_json()
    access_doc = section("lead.audit.access")
    assert {code(cells[0])[0] for cells in table_rows(access_doc) if code(cells[0])} == set(access)
    assert all(f"`{k}`" in access_doc for k in access["disclosures"][0])

    checkpoint = sign_checkpoint(Ed25519PrivateKey.generate(), "lead.events",
                                 datetime(2026, 1, 5, tzinfo=UTC),
                                 [Head(0, 10, 9, bytes(32))]).to_json()
    checkpoint_doc = section("lead.audit.checkpoints")
    documented = {code(cells[0])[0] for cells in table_rows(checkpoint_doc) if code(cells[0])}
    assert documented == set(checkpoint)
    assert all(f"`{k}`" in checkpoint_doc for k in checkpoint["heads"][0])
    assert f"`{checkpoint['format']}`" in checkpoint_doc


def test_schemas_list_shows_hub_formats_apart(capsys: pytest.CaptureFixture[str]) -> None:
    lines = run_cli(["schemas", "list"], capsys).splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("hub topics"))
    event_types = {et.name for et in load_catalog().all_versions()}
    assert all(ln.split()[0] in event_types for ln in lines[1:start] if ln.strip())
    for hub in hub_formats():
        line = next(ln for ln in lines[start:] if ln.startswith(hub.name))
        assert hub.topic in line and hub.fingerprint in line
        assert hub.name not in event_types
    rows = json.loads(run_cli(["schemas", "list", "--json"], capsys))
    assert {r["type"] for r in rows} == event_types
    shown = json.loads(run_cli(["schemas", "show", "CanonicalRecord"], capsys))
    assert shown == json.loads((HUB_SCHEMA_DIR / "CanonicalRecord.avsc").read_text())


def test_reference_clients_and_readme_link() -> None:
    text = doc_text()
    assert "`examples/java-client`" in text and "`examples/node-client`" in text
    assert "(docs/wire-format.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
