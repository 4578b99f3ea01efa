"""Read an audit bundle directory and verify it, offline (no Kafka): the file adapter over
:func:`consumers.audit.bundle_verify.verify_bundle` and
:func:`consumers.audit.bundle_seal.verify_seal`.

:func:`read_bundle_and_verify` streams events.jsonl (memory bounded whatever its length) and
returns one Report: the content's failures first (records and checkpoints), then the seal's
(files and manifest fields). A required file that is missing or unreadable is a named failure;
only a path that is not a directory, or a replacement key file that cannot be read, raises
BundleError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumers.audit.bundle_format import (
    CHECKPOINTS_FILE,
    EVENTS_FILE,
    KEY_FILE,
    MANIFEST_FILE,
    SEAL_FILE,
)
from consumers.audit.bundle_report import Failure, Report
from consumers.audit.bundle_seal import inventory, verify_seal
from consumers.audit.bundle_verify import verify_bundle
from consumers.audit.checkpoints import key_id, load_public_key_pem
from consumers.audit.errors import BundleError, CheckpointError


def _jsonl(path: Path) -> Iterator[Any]:
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                yield None


def read_bundle_and_verify(directory: Path, *, expected_key_id: str | None = None,
                           public_key_file: Path | None = None) -> Report:
    """Read a bundle directory and verify it: the records (streams events.jsonl; no Kafka),
    and every file against the seal. Failures of the content come first (they name records
    and checkpoints), then the seal's (they name files and manifest fields).

    ``public_key_file`` (a PEM) replaces the bundle's own key for every signature (the
    bundle's key file is still checked against the seal). A required file that is missing or
    unreadable is a named failure (the records are then not checked). Raises BundleError if
    ``directory`` is not a directory, or ``public_key_file`` cannot be read.
    """
    if not directory.is_dir():
        raise BundleError(f"{directory} is not a directory: not an audit bundle")
    files, strays = inventory(directory)
    problems: list[Failure] = []

    def read(name: str) -> bytes | None:
        if name not in files:
            return None  # verify_seal reports it: missing, not a regular file, unreadable
        try:
            return (directory / name).read_bytes()
        except OSError as exc:
            problems.append(Failure(f"unreadable ({type(exc).__name__})", file=name))
            return None

    manifest: dict[str, Any] | None = None
    manifest_bytes = read(MANIFEST_FILE)
    if manifest_bytes is not None:
        try:
            parsed = json.loads(manifest_bytes)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            manifest = parsed
        else:
            problems.append(Failure("not a JSON object", file=MANIFEST_FILE))
    if public_key_file is not None:
        try:
            key_pem: bytes | None = public_key_file.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {public_key_file} ({type(exc).__name__})") from exc
    else:
        key_pem = read(KEY_FILE)
    public_key: bytes | None = None
    if key_pem is not None:
        try:
            public_key = load_public_key_pem(key_pem)
        except CheckpointError as exc:
            if public_key_file is not None:
                raise BundleError(f"{public_key_file}: {exc}") from exc
            problems.append(Failure(str(exc), file=KEY_FILE))
    seal_failures = verify_seal(read(SEAL_FILE), manifest, files, strays, public_key)
    checkpoint_bytes = read(CHECKPOINTS_FILE)
    if (manifest is None or public_key is None or checkpoint_bytes is None
            or EVENTS_FILE not in files):
        report = Report(key_id=key_id(public_key) if public_key is not None else "")
        if public_key is not None and expected_key_id not in (None, report.key_id):
            report.failures.append(Failure(f"the bundle's key {report.key_id} is not the "
                                           f"pinned key {expected_key_id}"))
    else:
        checkpoints = [_parse_line(line) for line in checkpoint_bytes.splitlines()
                       if line.strip()]
        report = verify_bundle(manifest, [c if isinstance(c, dict) else {} for c in checkpoints],
                               _jsonl(directory / EVENTS_FILE), public_key,
                               expected_key_id=expected_key_id)
    report.failures.extend(problems)
    report.failures.extend(seal_failures)
    return report


def _parse_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None
