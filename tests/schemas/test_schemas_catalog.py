"""The catalog API other layers code against: lookups, emitters and data categories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leadhub.cli_schemas import register
from schemas.catalog import CATEGORIES, ROLES, SCHEMA_DIR, load_catalog
from schemas.compat import check_catalog

REQUIRED_TYPES = {
    "ReferralMade", "ReferralScreened", "IntakeCompleted", "AssessmentCompleted",
    "CaseManagerAssigned", "ContactLogged", "ParticipantExited", "ServiceReferralMade",
    "ServiceEnrolled", "ServiceEncounter", "ServiceExited", "HousingStatusChanged",
    "EmploymentStatusChanged", "BenefitsEnrolled", "ChargesHeld", "ChargesFiled",
    "ChargesDeclined", "CourtDateSet", "CaseResolved", "DefenderAssigned", "ConsentGranted",
    "ConsentRevoked", "IdentifierLinked", "IdentifierUnlinked", "IntakeDeadlineMissed",
}  # fmt: skip
SERVICE_TYPES = ("ServiceReferralMade", "ServiceEnrolled", "ServiceEncounter", "ServiceExited")


def test_catalog_has_every_required_type_sorted() -> None:
    catalog = load_catalog()
    assert set(catalog.types()) >= REQUIRED_TYPES
    assert list(catalog.types()) == sorted(catalog.types())
    assert load_catalog() is catalog  # the packaged catalog is cached


def test_lookups_agree() -> None:
    catalog = load_catalog()
    for event_type in catalog.all_versions():
        assert catalog.get(event_type.name, event_type.version) == event_type
        assert catalog.by_fingerprint(event_type.fingerprint) == event_type
        assert catalog.by_fingerprint(bytes.fromhex(event_type.fingerprint)) == event_type
        assert len(event_type.fingerprint) == 16
        assert event_type.path.name == f"{event_type.name}.v{event_type.version}.avsc"
        assert event_type.doc


def test_roles_and_categories_are_the_fixed_sets() -> None:
    assert set(ROLES) == {
        "police", "prosecutor", "defender", "case_management", "housing", "sud_treatment",
        "mental_health", "medical", "coordinator", "hub",
    }  # fmt: skip
    assert {"PROGRAM_STATUS", "REFERRAL", "LEGAL_CASE", "SUD_TREATMENT", "MENTAL_HEALTH",
            "MEDICAL", "HOUSING", "BENEFITS", "EMPLOYMENT", "CONTACT", "CONSENT",
            "IDENTITY"} == set(CATEGORIES)  # fmt: skip


def test_every_field_resolves_to_a_known_category() -> None:
    for event_type in load_catalog().all_versions():
        assert event_type.emitters <= set(ROLES)
        assert event_type.category in CATEGORIES
        resolved = event_type.field_categories({})
        assert set(resolved) == {spec.name for spec in event_type.fields}
        assert set(resolved.values()) <= set(CATEGORIES)


def test_emitters_are_realistic() -> None:
    catalog = load_catalog()
    assert not catalog.may_emit("police", "ConsentGranted")
    assert catalog.may_emit("case_management", "ConsentGranted")
    assert catalog.may_emit("case_management", "ConsentRevoked")
    assert catalog.may_emit("police", "ReferralMade")
    assert catalog.may_emit("prosecutor", "ChargesFiled")
    assert not catalog.may_emit("police", "ServiceEncounter")
    assert catalog.latest("IntakeDeadlineMissed").emitters == {"hub"}
    hub_types = {name for name in catalog.types() if catalog.may_emit("hub", name)}
    assert hub_types == {"IntakeDeadlineMissed"}
    assert not catalog.may_emit("janitor", "ReferralMade")
    assert not catalog.may_emit("police", "Nope")


def test_contact_fields_are_labelled_contact() -> None:
    fields = {f.name: f for f in load_catalog().latest("IntakeCompleted").fields}
    for name in ("preferred_name", "date_of_birth", "phone"):
        assert fields[name].category == "CONTACT"


@pytest.mark.parametrize("type_name", SERVICE_TYPES)
@pytest.mark.parametrize("service", ["SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"])
def test_health_service_types_make_the_whole_event_that_category(
    type_name: str, service: str
) -> None:
    event_type = load_catalog().latest(type_name)
    payload = {"service_type": service, "provider": "x"}
    assert event_type.event_category(payload) == service
    assert set(event_type.field_categories(payload).values()) == {service}


@pytest.mark.parametrize("type_name", SERVICE_TYPES)
def test_other_service_types_keep_the_type_category(type_name: str) -> None:
    event_type = load_catalog().latest(type_name)
    payload = {"service_type": "HOUSING", "provider": "x"}
    assert event_type.event_category(payload) == event_type.category == "PROGRAM_STATUS"
    assert "SUD_TREATMENT" not in event_type.field_categories(payload).values()


def test_field_without_category_inherits_the_type_category(tmp_path: Path) -> None:
    shutil.copytree(SCHEMA_DIR, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "CaseResolved.v1.avsc"
    schema = json.loads(path.read_text())
    del schema["fields"][4]["type"]["fields"][0]["category"]
    path.write_text(json.dumps(schema))
    event_type = load_catalog(tmp_path).latest("CaseResolved")
    assert event_type.fields[0].category is None
    assert event_type.field_categories({})["case_number"] == "LEGAL_CASE"


def test_shipped_catalog_passes_the_check() -> None:
    assert [str(p) for p in check_catalog()] == []


def test_register_is_importable() -> None:
    assert callable(register)
