"""Every rejection path raises a typed ContractError with a stable reason and no field values."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer

from schemas.catalog import SCHEMA_DIR, load_catalog
from schemas.codec import decode, encode
from schemas.errors import (
    CatalogError,
    ContractError,
    HubError,
    InvalidField,
    MalformedBody,
    MalformedJson,
    NotSingleObject,
    RejectReason,
    ResolutionFailed,
    UnknownEventType,
    UnknownFingerprint,
)
from schemas.event import Event, event_from_json, event_to_json, read_jsonl
from tests.factories import participant_id

SECRET = "SECRET-Jane-Doe-1980"
PERSON = participant_id("LH-7")
T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
REFERRAL = Event(
    event_id="0b0e6c1e-2f7a-4c55-9d57-3a1f0e9b7c01",
    type="ReferralMade",
    participant_id=PERSON,
    occurred_at=T0,
    payload={
        "door": "ARREST_DIVERSION",
        "offense_category": SECRET,
        "charges_held": True,
        "referring_officer": SECRET,
        "area": SECRET,
        "warm_handoff_at": None,
    },
)
CONSENT = Event(
    event_id="0b0e6c1e-2f7a-4c55-9d57-3a1f0e9b7c02",
    type="ConsentGranted",
    participant_id=PERSON,
    occurred_at=T0,
    payload={
        "consent_id": "c-1",
        "recipients": ["role:housing"],
        "categories": ["HOUSING"],
        "purposes": ["CARE_COORDINATION"],
        "valid_from": T0,
        "expires_at": None,
        "exceptions": [{"recipients": ["role:police"], "categories": ["HOUSING", 7]}],
        "part2": False,
        "form_sha256": "ab" * 32,
    },
)


def _with(event: Event, **payload: Any) -> Event:
    return dataclasses.replace(event, payload={**event.payload, **payload})


def _assert_rejected(
    call: Callable[[], object], kind: type[ContractError], reason: RejectReason
) -> ContractError:
    with pytest.raises(kind) as info:
        call()
    error = info.value
    assert isinstance(error, HubError)
    assert error.reason is reason
    assert SECRET not in str(error) and SECRET not in repr(error)
    return error


# -- encode -------------------------------------------------------------------------------------
INVALID_EVENTS = {
    "enum symbol": (_with(REFERRAL, door=SECRET), "payload.door"),
    "wrong type": (_with(REFERRAL, charges_held=SECRET), "payload.charges_held"),
    "bool is not a string": (_with(REFERRAL, area=True), "payload.area"),
    "unknown field": (_with(REFERRAL, favourite_colour=SECRET), "payload.favourite_colour"),
    "missing field": (
        dataclasses.replace(REFERRAL, payload={"door": "COMMUNITY"}),
        "payload.charges_held",
    ),
    "naive datetime": (
        _with(REFERRAL, warm_handoff_at=datetime(2025, 1, 1)),
        "payload.warm_handoff_at",
    ),
    "nested array item": (CONSENT, "payload.exceptions[0].categories[1]"),
    "payload not a record": (dataclasses.replace(REFERRAL, payload=[SECRET]), "payload"),  # type: ignore[arg-type]
    "event id not a uuid": (dataclasses.replace(REFERRAL, event_id=SECRET), "event_id"),
    "empty participant": (dataclasses.replace(REFERRAL, participant_id=" "), "participant_id"),
    "participant id not in the hub's format": (
        dataclasses.replace(REFERRAL, participant_id=SECRET), "participant_id"),
    "participant id in capitals": (
        dataclasses.replace(REFERRAL, participant_id=PERSON.upper()), "participant_id"),
    "event id of version 1": (
        dataclasses.replace(REFERRAL, event_id="0b0e6c1e-2f7a-1c55-9d57-3a1f0e9b7c01"),
        "event_id"),
    "event id of version 8": (
        dataclasses.replace(REFERRAL, event_id="0b0e6c1e-2f7a-8c55-9d57-3a1f0e9b7c01"),
        "event_id"),
    "naive occurred_at": (
        dataclasses.replace(REFERRAL, occurred_at=datetime(2025, 1, 1)),
        "occurred_at",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_EVENTS))
def test_encode_rejects_invalid_fields_naming_the_path(case: str) -> None:
    event, path = INVALID_EVENTS[case]
    error = _assert_rejected(
        lambda: encode(event, load_catalog()), InvalidField, RejectReason.INVALID_FIELD
    )
    assert error.field_path == path
    assert path in str(error)


def test_invalid_enum_message_lists_the_allowed_symbols() -> None:
    error = _assert_rejected(
        lambda: encode(_with(REFERRAL, door=SECRET), load_catalog()),
        InvalidField,
        RejectReason.INVALID_FIELD,
    )
    assert "ARREST_DIVERSION, SOCIAL_CONTACT, COMMUNITY" in str(error)


def test_int_out_of_range_is_rejected() -> None:
    event = Event(
        REFERRAL.event_id,
        "ContactLogged",
        PERSON,
        T0,
        {"contact_method": "PHONE", "successful": True, "duration_minutes": 2**40},
    )
    error = _assert_rejected(
        lambda: encode(event, load_catalog()), InvalidField, RejectReason.INVALID_FIELD
    )
    assert error.field_path == "payload.duration_minutes"


def test_unknown_type_and_version_are_rejected() -> None:
    catalog = load_catalog()
    _assert_rejected(
        lambda: encode(dataclasses.replace(REFERRAL, type="Nope"), catalog),
        UnknownEventType,
        RejectReason.UNKNOWN_EVENT_TYPE,
    )
    _assert_rejected(
        lambda: encode(REFERRAL, catalog, version=9),
        UnknownEventType,
        RejectReason.UNKNOWN_EVENT_TYPE,
    )
    _assert_rejected(
        lambda: catalog.latest("Nope"), UnknownEventType, RejectReason.UNKNOWN_EVENT_TYPE
    )


# -- decode -------------------------------------------------------------------------------------
def _good_bytes() -> bytes:
    return encode(REFERRAL, load_catalog())


@pytest.mark.parametrize(
    "data", [b"", b"\xc3\x01\x00", b"\x00" + bytes(20), b"Obj\x01" + bytes(20), SECRET.encode()]
)
def test_decode_rejects_what_is_not_single_object(data: bytes) -> None:
    _assert_rejected(
        lambda: decode(data, load_catalog()), NotSingleObject, RejectReason.NOT_SINGLE_OBJECT
    )


def test_decode_rejects_non_bytes() -> None:
    _assert_rejected(
        lambda: decode(SECRET, load_catalog()),  # type: ignore[arg-type]
        NotSingleObject,
        RejectReason.NOT_SINGLE_OBJECT,
    )


def test_decode_rejects_unknown_fingerprint() -> None:
    data = b"\xc3\x01" + bytes(8) + _good_bytes()[10:]
    error = _assert_rejected(
        lambda: decode(data, load_catalog()), UnknownFingerprint, RejectReason.UNKNOWN_FINGERPRINT
    )
    assert "0000000000000000" in str(error)


@pytest.mark.parametrize("cut", [11, 30, -1])
def test_decode_rejects_truncated_body(cut: int) -> None:
    data = _good_bytes()[:cut]
    error = _assert_rejected(
        lambda: decode(data, load_catalog()), MalformedBody, RejectReason.MALFORMED_BODY
    )
    assert isinstance(error.__cause__, Exception)


def test_decode_rejects_trailing_bytes() -> None:
    data = _good_bytes() + SECRET.encode()
    _assert_rejected(
        lambda: decode(data, load_catalog()), MalformedBody, RejectReason.MALFORMED_BODY
    )


def _written(event_id: str, participant: str) -> bytes:
    """A ReferralMade written by a plain Avro writer, past the checks of the hub's encoder."""
    event_type = load_catalog().latest("ReferralMade")
    body = io.BytesIO()
    record = {
        "event_id": event_id,
        "participant_id": participant,
        "occurred_at": T0,
        "source_partner": None,
        "payload": REFERRAL.payload,
    }
    schemaless_writer(body, event_type.schema, record)
    return b"\xc3\x01" + bytes.fromhex(event_type.fingerprint) + body.getvalue()


def test_decode_rejects_an_event_id_that_is_not_a_uuid() -> None:
    data = _written(SECRET, PERSON)
    error = _assert_rejected(
        lambda: decode(data, load_catalog()), InvalidField, RejectReason.INVALID_FIELD
    )
    assert error.field_path == "event_id"


@pytest.mark.parametrize(("event_id", "participant", "path"), [
    ("0b0e6c1e-2f7a-1c55-9d57-3a1f0e9b7c01", PERSON, "event_id"),  # version 1
    (REFERRAL.event_id, SECRET, "participant_id"),
    (REFERRAL.event_id, "p-" + "0" * 15, "participant_id"),
])
def test_decode_applies_the_partner_input_rules(event_id: str, participant: str,
                                                path: str) -> None:
    data = _written(event_id, participant)
    error = _assert_rejected(
        lambda: decode(data, load_catalog()), InvalidField, RejectReason.INVALID_FIELD
    )
    assert error.field_path == path


def test_a_recorded_event_decodes_as_it_was_accepted() -> None:
    """lead.events (strict=False) is decoded under the rules its records were accepted by:
    an old record with a version-1 event id or a free-form participant id still replays."""
    data = _written("0b0e6c1e-2f7a-1c55-9d57-3a1f0e9b7c01", SECRET)
    event = decode(data, load_catalog(), strict=False)
    assert (event.event_id, event.participant_id) == (
        "0b0e6c1e-2f7a-1c55-9d57-3a1f0e9b7c01", SECRET)
    for still_refused in (_written(SECRET, PERSON), _written(REFERRAL.event_id, " ")):
        _assert_rejected(lambda data=still_refused: decode(data, load_catalog(), strict=False),
                         InvalidField, RejectReason.INVALID_FIELD)


def test_decode_reports_a_writer_the_reader_cannot_resolve(tmp_path: Path) -> None:
    shutil.copytree(SCHEMA_DIR, tmp_path, dirs_exist_ok=True)
    v1 = tmp_path / "ReferralMade.v1.avsc"
    schema = json.loads(v1.read_text())
    schema["fields"][4]["type"]["fields"][0]["type"]["symbols"].append("COURT")
    v1.write_text(json.dumps(schema))
    catalog = load_catalog(tmp_path)
    payload = {k: v for k, v in REFERRAL.payload.items() if k != "warm_handoff_at"}
    data = encode(dataclasses.replace(REFERRAL, payload={**payload, "door": "COURT"}), catalog, 1)
    _assert_rejected(
        lambda: decode(data, catalog), ResolutionFailed, RejectReason.RESOLUTION_FAILED
    )


# -- catalog ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fingerprint", [bytes(8), "00" * 8, "xyz", b"\x01\x02"])
def test_by_fingerprint_rejects_unknown_or_malformed(fingerprint: bytes | str) -> None:
    _assert_rejected(
        lambda: load_catalog().by_fingerprint(fingerprint),
        UnknownFingerprint,
        RejectReason.UNKNOWN_FINGERPRINT,
    )


def test_loading_a_broken_catalog_raises_catalog_error(tmp_path: Path) -> None:
    (tmp_path / "Broken.v1.avsc").write_text("{" + SECRET)
    _assert_rejected(lambda: load_catalog(tmp_path), CatalogError, RejectReason.INVALID_CATALOG)
    _assert_rejected(
        lambda: load_catalog(tmp_path / "missing"), CatalogError, RejectReason.INVALID_CATALOG
    )


# -- JSON ---------------------------------------------------------------------------------------
def _json(**changes: Any) -> dict[str, Any]:
    return {**event_to_json(REFERRAL), **changes}


@pytest.mark.parametrize(
    "obj",
    [[SECRET], SECRET, {"type": "ReferralMade"}, _json(extra=SECRET), _json(**{SECRET: 1})],
)
def test_json_envelope_problems_are_malformed_json(obj: Any) -> None:
    _assert_rejected(
        lambda: event_from_json(obj, load_catalog()), MalformedJson, RejectReason.MALFORMED_JSON
    )


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        (_json(occurred_at=SECRET), "occurred_at"),
        (_json(occurred_at="2025-03-04T05:06:07"), "occurred_at"),
        (_json(participant_id=7), "participant_id"),
        (_json(participant_id=SECRET), "participant_id"),
        (_json(event_id="0b0e6c1e-2f7a-1c55-9d57-3a1f0e9b7c01"), "event_id"),
        (_json(type=7), "type"),
        (_json(payload={**_json()["payload"], "charges_held": SECRET}), "payload.charges_held"),
        (
            _json(payload={**_json()["payload"], "warm_handoff_at": SECRET}),
            "payload.warm_handoff_at",
        ),
    ],
)
def test_json_field_problems_are_invalid_fields(obj: dict[str, Any], path: str) -> None:
    error = _assert_rejected(
        lambda: event_from_json(obj, load_catalog()), InvalidField, RejectReason.INVALID_FIELD
    )
    assert error.field_path == path


def test_json_unknown_type() -> None:
    _assert_rejected(
        lambda: event_from_json(_json(type="Nope"), load_catalog()),
        UnknownEventType,
        RejectReason.UNKNOWN_EVENT_TYPE,
    )


def test_jsonl_errors_carry_the_line_number() -> None:
    good = json.dumps(event_to_json(REFERRAL))
    bad_json = io.StringIO(f"{good}\n\n{{{SECRET}\n")
    events = read_jsonl(bad_json, load_catalog())
    assert next(events) == REFERRAL
    error = _assert_rejected(lambda: next(events), MalformedJson, RejectReason.MALFORMED_JSON)
    assert "line 3" in str(error)
    bad_field = io.StringIO(json.dumps(_json(occurred_at=SECRET)) + "\n")
    error = _assert_rejected(
        lambda: next(read_jsonl(bad_field, load_catalog())),
        InvalidField,
        RejectReason.INVALID_FIELD,
    )
    assert "line 1" in str(error) and error.field_path == "occurred_at"


def test_every_reason_code_has_an_error_class() -> None:
    classes = {
        cls.default_reason
        for cls in (
            NotSingleObject,
            UnknownFingerprint,
            MalformedBody,
            ResolutionFailed,
            InvalidField,
            UnknownEventType,
            MalformedJson,
            CatalogError,
        )
    }
    assert classes == set(RejectReason)
