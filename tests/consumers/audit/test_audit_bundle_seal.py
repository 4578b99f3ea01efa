"""Byte for byte: the seal over every file and manifest field (no broker).

A bundle written by the exporter's own writer (:func:`finish_bundle`) from a synthetic log has
a byte flipped in each of its files, each file removed, files added, and each manifest field
changed, removed or added; each must fail naming that file or field. The cases are generated
from the files and manifest fields such a bundle actually has (tests/synthetic_bundle.py), so a
file or field added to the format is tested without anyone listing it; a broker test
(tests/consumers/audit/test_audit_bundle_export.py) checks that a real export has the same
files and fields and runs every case on it too. A reformatted manifest, a seal of another key
and a format 2 bundle are named as such; the CLI exits 1 on a moved window.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.audit.bundle_format import EVENTS_FILE, MANIFEST_FILE, SEAL_FILE
from consumers.audit.bundle_read import read_bundle_and_verify
from consumers.audit.bundle_seal import inventory, seal_bytes
from tests.synthetic_bundle import (
    FIELDS,
    FILES,
    LEAF_FIELDS,
    T0,
    edit_manifest,
    fields_named,
    files_named,
    flip_byte,
    write_synthetic_bundle,
)

VERIFY_CLI = [sys.executable, "-m", "leadhub.cli", "audit", "verify"]


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    """A fresh synthetic bundle, written and sealed by the exporter's writer."""
    return write_synthetic_bundle(tmp_path / "bundle")


def test_an_untouched_sealed_bundle_verifies(sealed: Path) -> None:
    report = read_bundle_and_verify(sealed)
    assert report.ok, [f.describe() for f in report.failures]
    assert report.records == 10 and report.checkpoints == 3
    assert SEAL_FILE in FILES and MANIFEST_FILE in FILES
    assert any(f.startswith("schemas/") for f in FILES)
    assert {"window.from", "window.to", "exported_at"} <= set(LEAF_FIELDS)
    done = subprocess.run([*VERIFY_CLI, str(sealed)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("verified: 10 records, 3 signed checkpoints, every file")


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("path", FILES)
def test_a_flipped_byte_in_any_file_is_named(sealed: Path, path: str, where: str) -> None:
    flip_byte(sealed / path, where)
    report = read_bundle_and_verify(sealed)
    failures = [f.describe() for f in report.failures]
    assert not report.ok
    assert path in files_named(report), failures
    # nothing else is blamed (a changed key file also makes the seal's key a stranger)
    assert files_named(report) <= {path, SEAL_FILE}, failures
    assert any(line.startswith(f"{path}: ") or line.startswith(f"{path} field ")
               for line in failures), failures


@pytest.mark.parametrize("path", FILES)
def test_a_missing_file_is_named(sealed: Path, path: str) -> None:
    (sealed / path).unlink()
    report = read_bundle_and_verify(sealed)
    assert any(f.file == path and f.reason.startswith("missing") for f in report.failures), [
        f.describe() for f in report.failures]


@pytest.mark.parametrize("extra", ["extra.txt", "schemas/Extra.avsc", "deeper/still/x.json",
                                   "link", "empty/"])
def test_an_unexpected_file_is_named(sealed: Path, extra: str) -> None:
    target = sealed / extra
    if extra == "link":
        target.symlink_to(sealed / EVENTS_FILE)
    elif extra.endswith("/"):
        target.mkdir()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")
    report = read_bundle_and_verify(sealed)
    assert [f.describe() for f in report.failures] == [f"{extra}: unexpected: " + (
        "a symbolic link" if extra == "link" else "an empty directory" if extra == "empty/"
        else "the seal does not list this file")]


CHANGES = ([(f, "change") for f in LEAF_FIELDS] + [(f, "remove") for f in FIELDS]
           + [(f, "add") for f in ("note", "window.note", "partitions.7")])


@pytest.mark.parametrize(("path", "how"), CHANGES)
def test_a_changed_manifest_field_is_named(sealed: Path, path: str, how: str) -> None:
    edit_manifest(sealed, path, how)
    report = read_bundle_and_verify(sealed)
    failures = [f.describe() for f in report.failures]
    assert fields_named(report) == {path}, failures
    reason = {"change": "changed", "remove": "removed", "add": "added"}[how]
    assert any(line.startswith(f"manifest.json field {path!r}: {reason}")
               for line in failures), failures
    assert files_named(report) == {MANIFEST_FILE}, failures


def test_a_moved_window_fails_in_the_cli_with_exit_1(sealed: Path) -> None:
    path = sealed / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["window"]["from"] = (T0 - timedelta(days=30)).isoformat()
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    done = subprocess.run([*VERIFY_CLI, str(sealed), "--json"], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert not result["ok"]
    assert result["first_failure"]["field"] == "window.from"
    assert result["failures"] == ["manifest.json field 'window.from': changed: not the value "
                                  "the hub sealed"]


def test_a_reformatted_manifest_is_named(sealed: Path) -> None:
    path = sealed / MANIFEST_FILE
    path.write_text(json.dumps(json.loads(path.read_text())))
    report = read_bundle_and_verify(sealed)
    assert [f.describe() for f in report.failures] == [
        f for f in (f.describe() for f in report.failures) if f.startswith("manifest.json: ")]
    assert report.first is not None and "reformatted" in report.first.reason


def test_a_seal_of_another_key_is_named(sealed: Path) -> None:
    files, _ = inventory(sealed)
    del files[SEAL_FILE]
    manifest = json.loads((sealed / MANIFEST_FILE).read_text())
    (sealed / SEAL_FILE).write_bytes(seal_bytes(Ed25519PrivateKey.generate(), manifest, files))
    report = read_bundle_and_verify(sealed)
    assert len(report.failures) == 1 and report.first is not None
    assert report.first.file == SEAL_FILE and report.first.reason.startswith("sealed by key")


def test_a_format_2_bundle_is_refused_with_advice(sealed: Path) -> None:
    path = sealed / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["format"] = "leadhub-audit-bundle/2"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (sealed / SEAL_FILE).unlink()
    report = read_bundle_and_verify(sealed)
    assert report.first is not None
    assert report.first.describe().startswith("manifest.json field 'format': a format 2 bundle")
    assert "export the window again" in report.first.reason
    assert any(f.file == SEAL_FILE and f.reason.startswith("missing") for f in report.failures)
