"""The accounts database (keys, gateway ledger, crosswalk) lives apart from the derived view:
replacing or rebuilding the view loses none of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, select, text

from consumers.api.access_log import MemoryAccessLog
from consumers.api.accounts import SCHEMA_VERSION, accounts_meta, adopt_from_view, migrate
from consumers.api.app import create_api
from consumers.api.auth import CredentialStore
from consumers.api.context import ApiConfig
from consumers.api.errors import ServiceUnavailable
from consumers.api.tables import api_credentials
from processors.site import load_site
from schemas.kafka_connection import KafkaConnection
from tests.factories import ROOT

SITE = load_site(ROOT / "config" / "site.example.yaml")
NO_KAFKA = KafkaConnection("127.0.0.1:1")


def _me(view_url: str, accounts_url: str, secret: str) -> int:
    app = create_api(ApiConfig(view_url, NO_KAFKA, accounts_database_url=accounts_url),
                     site=SITE, access_log=MemoryAccessLog())
    with TestClient(app) as http:
        return http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code


def test_keys_live_in_the_accounts_database_and_survive_a_new_view(
        database_url: str, tmp_path: Path) -> None:
    accounts_url = database_url  # PostgreSQL or SQLite: the accounts side under test
    first_view = f"sqlite:///{tmp_path / 'view-1.sqlite'}"
    app = create_api(ApiConfig(first_view, NO_KAFKA, accounts_database_url=accounts_url),
                     site=SITE, access_log=MemoryAccessLog())
    with TestClient(app):
        secret = app.state.context.credentials.create("harbor-cm", "staff", "ana").secret
    assert not inspect(create_engine(first_view)).has_table(api_credentials.name)
    (tmp_path / "view-1.sqlite").unlink()  # the view is dropped, as the mismatch advice says
    assert _me(f"sqlite:///{tmp_path / 'view-2.sqlite'}", accounts_url, secret) == 200


def test_the_cli_issues_keys_into_the_accounts_database(tmp_path: Path) -> None:
    env = dict(os.environ, LEADHUB_STATE_DIR=str(tmp_path),
               LEADHUB_DATABASE_URL=f"sqlite:///{tmp_path / 'view.sqlite'}")
    made = subprocess.run([sys.executable, "-m", "leadhub.cli", "keys", "create", "--partner",
                           "harbor-cm", "--kind", "staff", "--user", "ana"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]  # printed once, last
    accounts = f"sqlite:///{tmp_path / 'accounts.sqlite'}"
    with create_engine(accounts).connect() as connection:
        assert connection.execute(select(api_credentials.c.partner)).scalars().all() == [
            "harbor-cm"]
    assert _me(f"sqlite:///{tmp_path / 'other-view.sqlite'}", accounts, secret) == 200


def test_migrations_stamp_the_version_and_refuse_a_newer_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'accounts.sqlite'}")
    assert migrate(engine) == SCHEMA_VERSION
    assert migrate(engine) == SCHEMA_VERSION  # idempotent
    with engine.begin() as connection:
        assert connection.execute(select(accounts_meta.c.value)).scalar_one() == str(
            SCHEMA_VERSION)
        connection.execute(accounts_meta.update().values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(ServiceUnavailable, match="upgrade leadhub"):
        migrate(engine)


def test_step_2_gives_an_older_console_user_table_its_display_name(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'accounts.sqlite'}")
    with engine.begin() as connection:  # what step 1 made before console users had names
        connection.execute(text("CREATE TABLE console_users (user_name VARCHAR(128) PRIMARY "
                                "KEY, partner VARCHAR(64) NOT NULL)"))
        connection.execute(text("INSERT INTO console_users VALUES ('ana', 'harbor-cm')"))
        connection.execute(text("CREATE TABLE accounts_meta (key VARCHAR(64) PRIMARY KEY, "
                                "value VARCHAR(256) NOT NULL)"))
        connection.execute(text("INSERT INTO accounts_meta VALUES ('schema_version', '1')"))
    assert migrate(engine) == SCHEMA_VERSION == 2
    with engine.connect() as connection:
        assert connection.execute(text("SELECT user_name, display_name FROM console_users")
                                  ).all() == [("ana", None)]
    assert migrate(engine) == SCHEMA_VERSION  # and again: nothing to add


def test_keys_an_older_hub_kept_in_the_view_are_adopted_once(tmp_path: Path) -> None:
    legacy_view = create_engine(f"sqlite:///{tmp_path / 'view.sqlite'}")
    migrate(legacy_view)  # an older hub created the API's tables in the view database
    secret = CredentialStore(legacy_view, SITE).create("county-pao", "staff", "bo").secret
    accounts = create_engine(f"sqlite:///{tmp_path / 'accounts.sqlite'}")
    migrate(accounts)
    assert adopt_from_view(accounts, legacy_view) == 1
    assert adopt_from_view(accounts, legacy_view) == 0  # only while the accounts hold no key
    principal: Any = CredentialStore(accounts, SITE).authenticate(f"Bearer {secret}")
    assert principal.partner.id == "county-pao"
    with accounts.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM api_credentials")).scalar_one() == 1
