"""Credentials of the HTTP API: stored hashed, revocable, rotatable; 401/403 at the edge."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.auth import CredentialStore, hash_secret
from consumers.api.context import ApiConfig
from consumers.api.errors import CredentialError, Unauthorized
from consumers.api.ingest import MemoryInbound
from consumers.api.tables import api_credentials
from leadhub.cli import main
from schemas.kafka_connection import KafkaConnection
from tests.factories import SITE, participant_id

with warnings.catch_warnings():  # starlette's note about httpx2, at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

STAFF = {"X-Purpose": "care_coordination"}


@pytest.fixture
def store(database_url: str) -> Iterator[CredentialStore]:
    from consumers.api.accounts import migrate

    engine = create_engine(database_url)
    migrate(engine)
    yield CredentialStore(engine, SITE)
    engine.dispose()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_secret_is_stored_only_as_its_hash(store: CredentialStore) -> None:
    issued = store.create("harbor-cm", "staff", "alice")
    with store.engine.connect() as connection:
        stored = connection.execute(select(api_credentials)).mappings().one()
    assert issued.secret not in json.dumps({k: str(v) for k, v in stored.items()})
    assert stored["secret_sha256"] == hash_secret(issued.secret)
    principal = store.authenticate(f"Bearer {issued.secret}")
    assert (principal.partner.id, principal.kind, principal.user) == ("harbor-cm", "staff",
                                                                       "alice")


def test_revoked_and_rotated_keys_stop_working(store: CredentialStore) -> None:
    old = store.create("evergreen-pd", "partner")
    rotated = store.rotate(old.info.key_id)
    with pytest.raises(Unauthorized):
        store.authenticate(f"Bearer {old.secret}")
    assert store.authenticate(f"Bearer {rotated.secret}").partner.id == "evergreen-pd"
    assert store.get(old.info.key_id).replaced_by == rotated.info.key_id
    store.revoke(rotated.info.key_id)
    with pytest.raises(Unauthorized) as caught:
        store.authenticate(f"Bearer {rotated.secret}")
    assert caught.value.code == "REVOKED_CREDENTIAL"
    with pytest.raises(CredentialError):
        store.rotate(rotated.info.key_id)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer nope",
                                    "Bearer lh_k0123456789abcdef_" + "A" * 43])
def test_bad_credentials_are_unauthorized(store: CredentialStore, header: str | None) -> None:
    with pytest.raises(Unauthorized):
        store.authenticate(header)


def test_create_checks_partner_kind_and_user(store: CredentialStore) -> None:
    with pytest.raises(CredentialError):
        store.create("no-such-partner", "partner")
    with pytest.raises(CredentialError):
        store.create("harbor-cm", "staff")  # a staff token names its user
    with pytest.raises(CredentialError):
        store.create("harbor-cm", "partner", "alice")
    with pytest.raises(CredentialError):
        store.revoke("k0000000000000000")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, CredentialStore]]:
    app = create_api(ApiConfig(f"sqlite:///{tmp_path / 'v.sqlite'}",
                               KafkaConnection("127.0.0.1:1")), site=SITE,
                     access_log=MemoryAccessLog(), inbound=MemoryInbound())
    with TestClient(app) as http:
        yield http, app.state.context.credentials


EVENT = {"event_id": "5b0f3f5e-8a59-4a4f-9b7e-2f7a0c1d9e21", "type": "ContactLogged",
         "participant_id": participant_id(1), "occurred_at": "2026-03-02T15:04:05Z",
         "payload": {"contact_method": "OUTREACH", "successful": True}}


def test_http_401_for_missing_wrong_and_revoked(client: Any) -> None:
    http, store = client
    key = store.create("harbor-cm", "partner")
    token = store.create("harbor-cm", "staff", "alice")
    store.revoke(key.info.key_id)
    store.revoke(token.info.key_id)
    for headers in ({}, bearer("wrong"), bearer(key.secret)):
        response = http.post("/v1/events", json=EVENT, headers=headers)
        assert response.status_code == 401
        assert set(response.json()["error"]) >= {"code", "message"}
        assert response.headers["www-authenticate"] == "Bearer"
    for headers in ({}, bearer("wrong"), bearer(token.secret)):
        assert http.get("/v1/participants", headers={**headers, **STAFF}).status_code == 401


def test_http_403_for_the_wrong_kind_of_credential(client: Any) -> None:
    http, store = client
    key = store.create("harbor-cm", "partner")
    token = store.create("harbor-cm", "staff", "alice")
    published = http.post("/v1/events", json=EVENT, headers=bearer(token.secret))
    assert published.status_code == 403
    assert published.json()["error"]["code"] == "WRONG_CREDENTIAL_KIND"
    read = http.get("/v1/participants", headers={**bearer(key.secret), **STAFF})
    assert read.status_code == 403
    assert http.get("/v1/me", headers=bearer(key.secret)).status_code == 403


def test_keys_cli_create_list_rotate_revoke(tmp_path: Path, monkeypatch: Any,
                                            capsys: Any) -> None:
    monkeypatch.setenv("LEADHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'view.sqlite'}")
    monkeypatch.setenv("LEADHUB_ACCOUNTS_DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite'}")
    assert main(["keys", "create", "--partner", "harbor-cm", "--kind", "staff",
                 "--user", "alice"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("lh_k")
    assert main(["keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["partner"], k["user"], k["revoked_at"]) for k in listed] == [
        ("harbor-cm", "alice", None)]
    assert secret not in json.dumps(listed)
    key_id = listed[0]["key_id"]
    assert main(["keys", "rotate", key_id]) == 0
    new_secret = capsys.readouterr().out.strip()
    assert new_secret.startswith("lh_k") and new_secret != secret
    assert main(["keys", "revoke", key_id]) == 0
    assert key_id in capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    out = capsys.readouterr().out
    assert secret not in out and new_secret not in out
    assert out.count("revoked") == 1 and out.count("active") == 1
    assert main(["keys", "create", "--partner", "nobody", "--kind", "partner"]) == 1
