"""The OpenAPI document itself: no status the server never answers, the hub's error schema on
every error, and examples that are valid in the hub's id formats.

What the server answers is checked against the document in ``test_api_schemathesis.py``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.models import BATCH_EXAMPLE, COMPONENT_EXAMPLES, EVENT_EXAMPLE
from consumers.api.openapi import finish_openapi
from schemas.catalog import load_catalog
from schemas.event import event_from_json
from schemas.kafka_connection import KafkaConnection
from tests.factories import SITE

CATALOG = load_catalog()
PARTICIPANT_ID = re.compile(r"p-[0-9a-f]{16}")
ERROR_STATUSES = {"400", "401", "403", "404", "409", "413", "415", "503"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'v.sqlite'}"
    app = create_api(ApiConfig(url, KafkaConnection("127.0.0.1:1")), site=SITE, catalog=CATALOG,
                     access_log=MemoryAccessLog())
    spec: dict[str, Any] = app.openapi()
    return spec


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def examples(node: Any) -> Iterator[Any]:
    """Every ``example`` value and every item of an ``examples`` list in ``node``."""
    if isinstance(node, list):
        for item in node:
            yield from examples(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "example":
                yield value
            elif key == "examples" and isinstance(value, list):
                yield from value
            else:
                yield from examples(value)


def closed(node: Any) -> Any:
    """A copy of a schema where every object with declared properties admits no others."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: closed(value) for key, value in node.items()}
    if "properties" in copy and "additionalProperties" not in copy:
        copy["additionalProperties"] = False
    return copy


def validator(document: dict[str, Any], schema: dict[str, Any], *, strict: bool = False) -> Any:
    components = closed(document["components"]) if strict else document["components"]
    return jsonschema_rs.validator_for({**schema, "components": components})


def test_no_validation_error_422_is_documented(document: dict[str, Any]) -> None:
    for name, operation in operations(document):
        assert "422" not in operation["responses"], name
    assert not {"HTTPValidationError", "ValidationError"} & set(
        document["components"]["schemas"])


def test_every_error_response_is_the_hub_error_body_with_its_codes(
        document: dict[str, Any]) -> None:
    for name, operation in operations(document):
        errors = set(operation["responses"]) - {"200", "201", "202"}
        assert errors <= ERROR_STATUSES and {"400", "401", "403", "503"} <= errors, name
        for status in errors:
            response = operation["responses"][status]
            content = response["content"]["application/json"]
            base, codes = content["schema"]["allOf"]
            assert base == {"$ref": "#/components/schemas/ErrorBody"}, (name, status)
            listed = codes["properties"]["error"]["properties"]["code"]["enum"]
            assert listed and all(f"`{c}`" in response["description"] for c in listed)
            if "example" in content:
                check = validator(document, content["schema"])
                assert check.is_valid(content["example"]), (name, status)
        assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"]


def test_error_body_is_what_the_server_sends(document: dict[str, Any]) -> None:
    check = validator(document, {"$ref": "#/components/schemas/ErrorBody"})
    assert check.is_valid({"error": {"code": "NOT_FOUND", "message": "no participant"}})
    assert check.is_valid({"error": {"code": "INVALID_FIELD", "message": "m",
                                     "field_path": "payload.door"}})
    assert not check.is_valid({"error": {"code": "NOT_FOUND", "message": "m",
                                         "field_path": None}})
    assert not check.is_valid({"error": {"code": "NOT_FOUND"}})


def test_the_event_examples_are_accepted_events(document: dict[str, Any]) -> None:
    partner = SITE.partner("harbor-cm")
    assert partner is not None
    envelope = validator(document, {"$ref": "#/components/schemas/EventEnvelope"})
    for example in [EVENT_EXAMPLE, *BATCH_EXAMPLE]:
        assert envelope.is_valid(example)
        event = event_from_json(example, CATALOG)
        assert CATALOG.may_emit(partner.role, event.type)
        assert uuid.UUID(event.event_id).version == 4
        assert PARTICIPANT_ID.fullmatch(event.participant_id)
        assert example["occurred_at"].endswith(".000000Z")
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert body["application/json"]["example"] == EVENT_EXAMPLE


def test_the_envelope_takes_only_the_hub_id_formats(document: dict[str, Any]) -> None:
    envelope = validator(document, {"$ref": "#/components/schemas/EventEnvelope"})
    assert envelope.is_valid(EVENT_EXAMPLE)
    for bad in ({"participant_id": "bob"}, {"participant_id": "P-3C5E0B8D91A24F67"},
                {"participant_id": EVENT_EXAMPLE["participant_id"] + "0"},
                {"event_id": str(uuid.uuid1())},
                {"event_id": "0b4c3f0e-5d7e-8c55-9f43-3d5b1e2a9c11"}):
        assert not envelope.is_valid({**EVENT_EXAMPLE, **bad}), bad


def test_the_crosswalk_operations_are_documented(document: dict[str, Any]) -> None:
    link = document["paths"]["/v1/participants"]["post"]
    lookup = document["paths"]["/v1/identifiers/{local_id}"]["get"]
    body = link["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/LinkRequest"}
    ok = {"$ref": "#/components/schemas/ParticipantLink"}
    for status in ("200", "201"):
        assert link["responses"][status]["content"]["application/json"]["schema"] == ok
    assert lookup["responses"]["200"]["content"]["application/json"]["schema"] == ok
    codes = lookup["responses"]["404"]["content"]["application/json"]["schema"]["allOf"][1]
    assert "NOT_FOUND" in codes["properties"]["error"]["properties"]["code"]["enum"]
    answer = validator(document, ok, strict=True)
    assert answer.is_valid({"participant_id": "p-0123456789abcdef"})
    assert not answer.is_valid({"participant_id": "bob"})
    request = validator(document, {"$ref": "#/components/schemas/LinkRequest"}, strict=True)
    assert request.is_valid({"local_id": "BK-2026-000123"})
    for bad in ("", "x" * 129, "a/b", " BK-1", "-BK"):
        assert not request.is_valid({"local_id": bad}), bad
    parameter = next(p for p in lookup["parameters"] if p["name"] == "local_id")
    assert parameter["in"] == "path" and parameter["schema"]["pattern"]


def test_every_example_uses_the_hub_id_formats(document: dict[str, Any]) -> None:
    ids: dict[str, list[str]] = {"participant_id": [], "event_id": []}

    def collect(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("participant_id", "referral_event_id") and isinstance(value, str):
                    ids["participant_id" if key == "participant_id" else "event_id"].append(
                        value)
                elif key == "event_id" and isinstance(value, str):
                    ids["event_id"].append(value)
                else:
                    collect(value)

    found = list(examples(document))
    collect(found)
    assert len(ids["participant_id"]) >= 5 and len(ids["event_id"]) >= 5
    assert all(PARTICIPANT_ID.fullmatch(p) for p in ids["participant_id"]), ids
    assert all(uuid.UUID(e).version == 4 for e in ids["event_id"]), ids
    path_parameter = next(p for p in document["paths"]["/v1/participants/{participant_id}"]
                          ["get"]["parameters"] if p["name"] == "participant_id")
    assert all(PARTICIPANT_ID.fullmatch(p) for p in path_parameter["schema"]["examples"])


def test_every_component_example_is_valid_for_its_schema(document: dict[str, Any]) -> None:
    checked = 0
    for name, schema in document["components"]["schemas"].items():
        if "example" in schema:
            check = validator(document, {"$ref": f"#/components/schemas/{name}"}, strict=True)
            assert check.is_valid(schema["example"]), name
            checked += 1
    assert checked == len(COMPONENT_EXAMPLES)


def test_the_site_and_catalog_fill_in_the_enums(document: dict[str, Any]) -> None:
    for name, operation in operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "X-Purpose":
                assert parameter["schema"]["enum"] == list(SITE.purposes), name
    types = document["components"]["schemas"]["EventEnvelope"]["properties"]["type"]["enum"]
    roles = {p.role for p in SITE.partners}
    assert types == [t for t in CATALOG.types() if any(CATALOG.may_emit(r, t) for r in roles)]
    assert "IntakeDeadlineMissed" not in types  # the hub derives it; no partner emits it


def test_finish_openapi_leaves_its_input_alone(document: dict[str, Any]) -> None:
    raw = {"paths": {"/x": {"get": {"responses": {"200": {}, "422": {}}}}},
           "components": {"schemas": {"HTTPValidationError": {"$ref":
                                      "#/components/schemas/ValidationError"},
                                      "ValidationError": {}}}}
    finished = finish_openapi(raw, SITE, CATALOG)
    assert list(finished["paths"]["/x"]["get"]["responses"]) == ["200"]
    assert "ValidationError" not in finished["components"]["schemas"]
    assert "422" in raw["paths"]["/x"]["get"]["responses"]
