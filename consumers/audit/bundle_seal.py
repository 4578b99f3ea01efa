"""The seal of an audit bundle: seal.json, the hub's Ed25519 signature over the SHA-256 of
every other file and of every manifest field (the format: :mod:`consumers.audit.bundle_format`,
"The seal").

:func:`inventory` lists a bundle directory: the SHA-256 of every regular file, and what is
wrong with anything else (not followed, not read). :func:`field_digests` digests every manifest
field by path; :func:`seal_bytes` is the content of seal.json; :func:`verify_seal` (pure) names
every file or manifest field that is not as sealed, and a seal that is missing, unreadable, not
canonical, of another key or forged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consumers.audit.bundle_format import (
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    REQUIRED_FILES,
    SEAL_CONTEXT,
    SEAL_FILE,
)
from consumers.audit.bundle_report import Failure
from consumers.audit.checkpoints import key_id, public_bytes
from consumers.audit.digest import canonical_json


def field_digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 hex of the canonical JSON of every manifest field, by path: each top-level field
    and, recursively, each field of an object-valued one (``window``, ``window.from``, ...)."""
    digests: dict[str, str] = {}

    def walk(path: str, value: Any) -> None:
        digests[path] = hashlib.sha256(canonical_json(value)).hexdigest()
        if isinstance(value, Mapping):
            for name, inner in value.items():
                walk(f"{path}.{name}", inner)

    for name, value in manifest.items():
        walk(str(name), value)
    return digests


def seal_bytes(private_key: Ed25519PrivateKey, manifest: Mapping[str, Any],
               files: Mapping[str, str]) -> bytes:
    """The content of seal.json (see :mod:`consumers.audit.bundle_format`): ``files`` maps the
    relative path of every other file of the bundle to its SHA-256 hex, ``manifest`` is
    manifest.json's."""
    body = {"format": BUNDLE_FORMAT, "key_id": key_id(public_bytes(private_key.public_key())),
            "files": dict(files), "fields": field_digests(manifest)}
    signature = private_key.sign(SEAL_CONTEXT + canonical_json(body))
    return canonical_json({**body, "signature": base64.b64encode(signature).decode()}) + b"\n"


def verify_seal(seal: bytes | None, manifest: Mapping[str, Any] | None,
                files: Mapping[str, str], strays: Mapping[str, str],
                public_key: bytes | None) -> list[Failure]:
    """What the seal finds wrong with a bundle; no I/O.

    ``seal`` is seal.json's bytes (None: missing); ``manifest`` the parsed manifest (None: it
    did not parse, which the caller reports); ``files`` the SHA-256 hex of every regular file
    found in the bundle, by relative ``/``-separated path, seal.json included; ``strays`` what
    is wrong with whatever else was found, by path (symbolic links, empty directories,
    devices, unreadable files: :func:`inventory`);
    ``public_key`` the key the bundle is verified with (None: unreadable, reported by the
    caller). Each failure names the file or the manifest field; a changed manifest is named by
    its fields (the most specific paths that differ), its bytes only if every field matches.
    """
    failures: list[Failure] = []
    fail = failures.append
    body: dict[str, Any] | None = None
    if seal is None:
        fail(Failure("missing: nothing vouches for the manifest and the other files (a bundle "
                     "of format 2 or older has no seal: export the window again)",
                     file=SEAL_FILE))
    else:
        body = _check_seal(seal, public_key, fail)
    sealed: dict[str, str] = {p: d for p, d in (body or {}).get("files", {}).items()
                              if p != SEAL_FILE}
    for path in sorted((set(sealed) | set(REQUIRED_FILES)) - set(files) - set(strays)):
        fail(Failure("missing", file=path))
    if body is not None:
        named = _field_failures(body["fields"], manifest) if manifest is not None else []
        failures.extend(named)
        for path, digest in sorted(sealed.items()):
            found = files.get(path)
            if found is None or found == digest or (path == MANIFEST_FILE and named):
                continue
            why = ("every field has its sealed value, yet the bytes differ (reformatted)"
                   if path == MANIFEST_FILE and manifest is not None else
                   "altered or replaced")
            fail(Failure(f"SHA-256 {found[:16]}... is not the sealed {digest[:16]}...: {why}",
                         file=path))
        for path in sorted(set(files) - set(sealed) - {SEAL_FILE}):
            fail(Failure("unexpected: the seal does not list this file", file=path))
    for path, why in sorted(strays.items()):
        fail(Failure(why, file=path))
    return failures


def _digest_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _check_seal(seal: bytes, public_key: bytes | None,
                fail: Any) -> dict[str, Any] | None:
    """The seal's body if its file and field digests are worth comparing; failures via
    ``fail``. None if it is unreadable, of another format, or altered (its signature fails
    with the key it names); a seal of another key is compared (that names the changed key
    file)."""
    try:
        obj = json.loads(seal)
        signature = base64.b64decode(obj["signature"], validate=True)
        body = {k: v for k, v in obj.items() if k != "signature"}
        if not (isinstance(body.get("format"), str) and isinstance(body.get("key_id"), str)
                and _digest_map(body.get("files")) and _digest_map(body.get("fields"))):
            raise ValueError("not a seal")
    except (AttributeError, KeyError, TypeError, ValueError, binascii.Error):
        fail(Failure("unreadable: not a seal", file=SEAL_FILE))
        return None
    if seal != canonical_json(obj) + b"\n":
        fail(Failure("not byte for byte the canonical JSON the exporter writes (altered)",
                     file=SEAL_FILE))
    if body["format"] != BUNDLE_FORMAT:
        fail(Failure(f"a seal of format {body['format']!r}, not {BUNDLE_FORMAT}",
                     file=SEAL_FILE))
        return None
    if public_key is None:
        return body
    kid = key_id(public_key)
    if body["key_id"] != kid:
        fail(Failure(f"sealed by key {body['key_id']}, not by the key {kid} the bundle is "
                     "verified with", file=SEAL_FILE))
        return body
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, SEAL_CONTEXT + canonical_json(body))
    except (InvalidSignature, ValueError):
        fail(Failure(f"the signature does not verify with key {kid} (forged or altered)",
                     file=SEAL_FILE))
        return None
    return body


def _field_failures(sealed: Mapping[str, str], manifest: Mapping[str, Any]) -> list[Failure]:
    """The manifest fields that differ from the sealed ones, each named once, most precisely:
    a field removed or added (not the fields inside it), or a changed field with no changed
    field inside it."""
    found = field_digests(manifest)
    differing = {p for p in set(sealed) | set(found) if sealed.get(p) != found.get(p)}

    def container(path: str, paths: Iterable[str]) -> bool:
        return any(q.startswith(path + ".") for q in paths)

    reported: list[str] = []
    failures: list[Failure] = []
    for path in sorted(differing, key=lambda p: (p.count("."), p)):
        if any(path.startswith(r + ".") for r in reported):
            continue
        if path in sealed and path in found:
            if container(path, sealed) and container(path, found):
                continue  # both objects: the fields inside say what changed
            reason = "changed: not the value the hub sealed"
        elif path in sealed:
            reason = "removed: the seal has it"
        else:
            reason = "added: the seal does not have it"
        reported.append(path)
        failures.append(Failure(reason, file=MANIFEST_FILE, field=path))
    return failures


def _sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def inventory(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Everything under ``directory``: (the SHA-256 hex of every regular file by relative
    ``/``-separated path, and what is wrong with everything else by path: a symbolic link,
    which is not followed, an empty directory (path with a trailing ``/``), a device or socket,
    a file or directory that cannot be read)."""
    files: dict[str, str] = {}
    strays: dict[str, str] = {}

    def walk(folder: Path, prefix: str) -> bool:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            strays[prefix] = f"unreadable ({type(exc).__name__})"
            return True
        for entry in entries:
            path = prefix + entry.name
            if entry.is_symlink():
                strays[path] = "unexpected: a symbolic link"
            elif entry.is_dir():
                if not walk(Path(entry.path), path + "/"):
                    strays[path + "/"] = "unexpected: an empty directory"
            elif entry.is_file():
                try:
                    files[path] = _sha256_file(Path(entry.path))
                except OSError as exc:
                    strays[path] = f"unreadable ({type(exc).__name__})"
            else:
                strays[path] = "unexpected: not a regular file"
        return bool(entries)

    walk(directory, "")
    return files, strays
