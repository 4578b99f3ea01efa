"""Site policy loading: the example file loads; every invalid file names its key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.errors import PolicyError, SiteError
from processors.site import Access, load_site, parse_site
from schemas.errors import HubError
from tests.factories import SITE_FILE

EXAMPLE = SITE_FILE


def example_document() -> dict[str, Any]:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_example_site_loads_with_eight_partners_of_distinct_roles() -> None:
    site = load_site(EXAMPLE)
    assert len(site.partners) == 8
    roles = {partner.role for partner in site.partners}
    assert roles == {
        "police", "prosecutor", "defender", "case_management",
        "housing", "sud_treatment", "mental_health", "coordinator",
    }
    assert 7 <= site.intake_deadline_days <= 30
    for partner in site.partners:
        assert partner.purpose in site.purposes
        assert site.partner(partner.id) == partner


def test_unlisted_role_and_category_are_never() -> None:
    site = load_site(EXAMPLE)
    assert site.access_for("police", "HOUSING") is Access.NEVER
    assert site.access_for("medical", "PROGRAM_STATUS") is Access.NEVER
    assert site.access_for("case_management", "HOUSING") is Access.ALWAYS
    assert site.access_for("defender", "SUD_TREATMENT") is Access.WITH_CONSENT


def test_part2_programs_are_marked_or_of_the_sud_role() -> None:
    site = load_site(EXAMPLE)
    programs = {p.id for p in site.partners if p.is_part2_program}
    assert programs == {"riverbend-sud"}
    marked = parse_site(_set(example_document(), ("partners", 6, "part2_program"), True))
    clinic = marked.partner("northside-mh")
    assert clinic is not None and clinic.part2_program and clinic.is_part2_program
    unmarked = _set(example_document(), ("partners", 5, "part2_program"), _DELETE)
    sud = parse_site(unmarked).partner("riverbend-sud")
    assert sud is not None and sud.part2_program  # the role makes it one by default


def test_unknown_partner_is_none() -> None:
    site = load_site(EXAMPLE)
    assert site.partner("nobody") is None
    assert site.partner(None) is None


def _set(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


_DELETE = object()

INVALID = [
    (("intake_deadline_days",), 6, "intake_deadline_days", "between 7 and 30"),
    (("intake_deadline_days",), 31, "intake_deadline_days", "between 7 and 30"),
    (("intake_deadline_days",), "14", "intake_deadline_days", "whole number"),
    (("intake_deadline_days",), True, "intake_deadline_days", "whole number"),
    (("intake_deadline_days",), _DELETE, "intake_deadline_days", "whole number"),
    (("partners", 0, "role"), "sheriff", "partners[0].role", "police, prosecutor"),
    (("partners", 0, "role"), "hub", "partners[0].role", "must be one of"),
    (("partners", 1, "id"), "evergreen-pd", "partners[1].id", "used twice"),
    (("partners", 1, "id"), "Bad Id", "partners[1].id", "lowercase"),
    (("partners", 1, "id"), "hub", "partners[1].id", "reserved"),
    (("partners", 2, "purpose"), "curiosity", "partners[2].purpose", "site's purposes"),
    (("partners", 2, "name"), _DELETE, "partners[2].name", "missing"),
    (("partners", 2, "colour"), "blue", "partners[2].colour", "unknown key"),
    (("partners",), [], "partners", "at least one"),
    (("purposes",), "treatment", "purposes", "must be a list"),
    (("purposes", 0), "Not Snake", "purposes[0]", "lower_snake_case"),
    (("access", "sheriff"), {"HOUSING": "always"}, "access.sheriff", "unknown role"),
    (("access", "housing", "GOSSIP"), "always", "access.housing.GOSSIP", "unknown data category"),
    (("access", "housing", "HOUSING"), "sometimes", "access.housing.HOUSING", "with_consent"),
    (("access", "police", "SUD_TREATMENT"), "with_consent", "access.police.SUD_TREATMENT", "floor"),
    (("access", "prosecutor", "MEDICAL"), "always", "access.prosecutor.MEDICAL", "floor"),
    (("access", "police", "MENTAL_HEALTH"), "always", "access.police.MENTAL_HEALTH", "floor"),
    (("colour",), "blue", "colour", "unknown key"),
    (("partners", 5, "part2_program"), False, "partners[5].part2_program", "Part 2 program"),
    (("partners", 6, "part2_program"), "yes", "partners[6].part2_program", "true or false"),
    (("access", "case_management", "SUD_TREATMENT"), "always",
     "access.case_management.SUD_TREATMENT", "Part 2 consent"),
    (("expiry_sweep_seconds",), 0, "expiry_sweep_seconds", "between 1 and 86400"),
]


@pytest.mark.parametrize(("path", "value", "key_path", "hint"), INVALID)
def test_invalid_site_names_key_path_and_what_is_allowed(
    path: tuple[Any, ...], value: Any, key_path: str, hint: str
) -> None:
    with pytest.raises(SiteError) as caught:
        parse_site(_set(example_document(), path, value))
    assert caught.value.key_path == key_path
    assert hint in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert isinstance(caught.value, PolicyError)
    assert isinstance(caught.value, HubError)


def test_not_a_mapping_and_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="mapping"):
        parse_site(["not", "a", "mapping"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("partners: [\n  - id: x\n", encoding="utf-8")
    with pytest.raises(SiteError, match="not valid YAML at line"):
        load_site(broken)
    with pytest.raises(SiteError, match="cannot read site file"):
        load_site(tmp_path / "missing.yaml")


def test_error_messages_never_echo_partner_display_names() -> None:
    document = _set(example_document(), ("partners", 0, "role"), "sheriff")
    with pytest.raises(SiteError) as caught:
        parse_site(document)
    assert "Evergreen City Police" not in str(caught.value)
