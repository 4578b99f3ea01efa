"""The OpenAPI document, finished for one site and catalog so it says what the server does.

FastAPI builds the document from the routes; :func:`finish_openapi` then

* drops the ``422 HTTPValidationError`` FastAPI adds to every route with parameters: the app
  answers a request that fails validation with ``400`` and the hub's error body
  (:func:`consumers.api.app.install_error_handlers`), which every route declares;
* registers the components the routes refer to by ``$ref`` (``ErrorBody``, ``EventEnvelope``)
  and adds the components' examples (after FastAPI, which drops every null it encodes);
* fills in what only the site and catalog know: the purposes of use ``X-Purpose`` takes, the
  event types a partner may publish, and the event types and categories the timeline filters by.

Pure: a dict in, a dict out.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from consumers.api.models import (
    COMPONENT_EXAMPLES,
    EVENT_ID_EXAMPLE,
    PARTICIPANT_EXAMPLE,
    ErrorBody,
)
from processors.site import SitePolicy
from schemas.catalog import CATEGORIES, Catalog
from schemas.event import PARTICIPANT_ID_PATTERN

COMPONENTS = "#/components/schemas/"
EVENT_ENVELOPE_REF = COMPONENTS + "EventEnvelope"
_VALIDATION_COMPONENTS = ("HTTPValidationError", "ValidationError")
#: A random (version 4) UUID in canonical text form, what ``event_id`` must be.
UUID4_PATTERN = (r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
                 r"[0-9a-fA-F]{12}$")


def event_envelope_schema(types: Sequence[str]) -> dict[str, Any]:
    """JSON Schema of the JSON event envelope whose ``type`` is one of ``types``."""
    return {
        "type": "object",
        "title": "EventEnvelope",
        "description": "The JSON event envelope. The payload's fields are those of the type's "
                       "latest schema (`leadhub schemas show TYPE`); a missing or wrong field "
                       "is a 400 naming it in `field_path`.",
        "required": ["event_id", "type", "participant_id", "occurred_at", "payload"],
        "additionalProperties": False,
        "properties": {
            "event_id": {"type": "string", "format": "uuid", "pattern": UUID4_PATTERN,
                         "examples": [EVENT_ID_EXAMPLE],
                         "description": "A fresh random (version 4) UUID; other versions "
                                        "are refused (version 8 is reserved for events the "
                                        "hub derives)."},
            "type": {"type": "string", "enum": list(types),
                     "description": "An event type your partner's role may emit."},
            "participant_id": {"type": "string", "pattern": f"^{PARTICIPANT_ID_PATTERN}$",
                               "examples": [PARTICIPANT_EXAMPLE],
                               "description": "The hub's pseudonymous participant id: `p-` "
                                              "and 16 lowercase hex digits, from `POST "
                                              "/v1/participants`; also the Kafka key."},
            "occurred_at": {"type": "string", "format": "date-time",
                            "examples": ["2026-03-02T15:04:05.000000Z"],
                            "description": "When it happened: ISO 8601 with `Z` or an "
                                           "offset, kept to the microsecond in UTC."},
            "source_partner": {"type": ["string", "null"],
                               "description": "Leave empty; if set it must be your partner "
                                              "id."},
            "payload": {"type": "object", "description": "The type's own fields."},
        },
    }


def publishable_types(site: SitePolicy, catalog: Catalog) -> list[str]:
    """The event types some partner of ``site`` may emit, in catalog order."""
    roles = {partner.role for partner in site.partners}
    return [t for t in catalog.types() if any(catalog.may_emit(role, t) for role in roles)]


def _error_components() -> dict[str, Any]:
    schema = ErrorBody.model_json_schema(ref_template=COMPONENTS + "{model}")
    nested: dict[str, Any] = schema.pop("$defs", {})
    return {**nested, "ErrorBody": schema}


def _set_enum(parameter: dict[str, Any], values: Sequence[str]) -> None:
    """Limit a string parameter (or each item of an array parameter) to ``values``."""
    schema = parameter.get("schema", {})
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") == "array":
            option["items"] = {"type": "string", "enum": list(values)}
        elif option.get("type") == "string":
            option["enum"] = list(values)


def finish_openapi(spec: dict[str, Any], site: SitePolicy, catalog: Catalog) -> dict[str, Any]:
    """Return a copy of FastAPI's ``spec`` that describes this app for ``site`` and ``catalog``
    (see the module doc)."""
    spec = copy.deepcopy(spec)
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                name, where = parameter.get("name", ""), parameter.get("in")
                if where == "header" and name.lower() == "x-purpose":
                    parameter["schema"] = {"type": "string", "enum": list(site.purposes)}
                elif where == "query" and path.endswith("/timeline") and name == "type":
                    _set_enum(parameter, catalog.types())
                elif where == "query" and path.endswith("/timeline") and name == "category":
                    _set_enum(parameter, CATEGORIES)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in _error_components().items():
        schemas.setdefault(name, schema)
    schemas["EventEnvelope"] = event_envelope_schema(publishable_types(site, catalog))
    for name, example in COMPONENT_EXAMPLES.items():
        if name in schemas:
            schemas[name]["example"] = copy.deepcopy(example)
    for name in _VALIDATION_COMPONENTS:  # HTTPValidationError refers to ValidationError
        if f'"{COMPONENTS}{name}"' not in json.dumps(spec):
            schemas.pop(name, None)
    return spec
