"""``leadhub schemas list|show|check``."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from leadhub import cli
from leadhub.cli_schemas import register
from schemas.catalog import SCHEMA_DIR, load_catalog


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="leadhub")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def test_list_json_has_every_type_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schemas", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    catalog = load_catalog()
    assert [(r["type"], r["version"]) for r in rows] == [
        (et.name, et.version) for et in catalog.all_versions()
    ]
    by_type = {(r["type"], r["version"]): r for r in rows}
    encounter = by_type[("ServiceEncounter", 1)]
    assert encounter["fingerprint"] == catalog.get("ServiceEncounter", 1).fingerprint
    assert {"PROGRAM_STATUS", "SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"} <= set(
        encounter["categories"]
    )
    assert "case_management" in encounter["emitters"]
    assert Path(encounter["path"]).is_file()


def test_list_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schemas", "list"]) == 0
    out = capsys.readouterr().out
    assert "ReferralMade" in out and load_catalog().get("ReferralMade", 2).fingerprint in out


def test_show_prints_the_avsc(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schemas", "show", "ReferralMade"]) == 0
    assert json.loads(capsys.readouterr().out)["doc"].endswith("v2 adds warm_handoff_at.")
    assert run(["schemas", "show", "ReferralMade", "--version", "1"]) == 0
    assert "warm_handoff_at" not in capsys.readouterr().out


def test_check_passes_on_the_shipped_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schemas", "check"]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_fails_on_a_broken_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(SCHEMA_DIR, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "ReferralMade.v2.avsc"
    schema = json.loads(path.read_text())
    payload_fields = schema["fields"][4]["type"]["fields"]
    del payload_fields[-1]["default"]  # v2 can no longer read v1 data
    del payload_fields[0]["doc"]
    payload_fields[1]["category"] = "GOSSIP"
    schema["emitters"].append("janitor")
    path.write_text(json.dumps(schema))
    (tmp_path / "Misnamed.v1.avsc").write_text((tmp_path / "ConsentRevoked.v1.avsc").read_text())
    assert run(["schemas", "check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "warm_handoff_at: reader field has no default" in err
    assert "payload.door: field has no doc" in err
    assert "unknown category 'GOSSIP'" in err
    assert "unknown emitter role 'janitor'" in err
    assert "Misnamed.v1.avsc" in err


def test_registered_in_the_leadhub_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert "leadhub.cli_schemas" in cli.COMMAND_MODULES
    assert cli.main(["schemas", "show", "Nope"]) == 1
    assert "unknown event type Nope" in capsys.readouterr().err
