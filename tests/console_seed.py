"""A console over a seeded view, for the console's tests (no Kafka): a SQLite view with what
the policy core projects from a simulated site, plus hand-made rows (a missed intake deadline,
a person only another partner knows, a police link), an in-memory access log, a recording
inbound publisher, staff users, and a settable clock."""

from __future__ import annotations

import re
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.ingest import MemoryInbound
from consumers.console.users import IssuedPassword
from consumers.console.web import users_of
from consumers.store import RowChange, ViewStore
from processors.offline import project_events, rows_for
from processors.projector import Projector
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.kafka_connection import KafkaConnection
from tests.factories import SITE

CATALOG = load_catalog()
START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 90
NOW = START + timedelta(days=DAYS)
#: Known only to riverbend-sud (a person harbor-cm has no row of).
HIDDEN = "p-00000000000000f1"
#: A participant the police linked (harbor-cm sees the link row, IDENTITY: always).
LINKED_BY_POLICE = "p-00000000000000d1"
#: Harbor's participant whose intake deadline was missed.
MISSED = "p-00000000000000e1"
#: A local id harbor-cm linked, and one only the police linked (harbor-cm sees that row).
HARBOR_LOCAL = "HS-4471"
POLICE_LOCAL = "BK-2026-0042"
#: MISSED's case manager in harbor-cm's rows: the user name of the console user ``ana``.
ANA_AS_CASE_MANAGER = "Ana"
#: MISSED's consents in harbor-cm's rows: one in force naming cedar-housing, one revoked.
ACTIVE_CONSENT = "c-seed-active"
REVOKED_CONSENT = "c-seed-revoked"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _row(type_: str, participant: str, at: datetime, fields: dict[str, Any],
         categories: list[str], source: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": type_, "participant_id": participant,
            "occurred_at": at.isoformat().replace("+00:00", "Z"), "source_partner": source,
            "fields": fields, "categories": categories, "consent_ids": [], "notice": None}


def extra_rows() -> dict[str, list[dict[str, Any]]]:
    """Hand-made rows by recipient."""
    referral = _row("ReferralMade", MISSED, NOW - timedelta(days=30),
                    {"door": "ARREST_DIVERSION", "charges_held": True}, ["REFERRAL"],
                    "evergreen-pd")
    missed = _row("IntakeDeadlineMissed", MISSED, NOW - timedelta(days=16),
                  {"referral_event_id": referral["event_id"]}, ["PROGRAM_STATUS"], "hub")
    harbor_link = _row("IdentifierLinked", MISSED, NOW - timedelta(days=29),
                       {"partner": "harbor-cm", "local_id": HARBOR_LOCAL}, ["IDENTITY"],
                       "harbor-cm")
    police_link = _row("IdentifierLinked", LINKED_BY_POLICE, NOW - timedelta(days=29),
                       {"partner": "evergreen-pd", "local_id": POLICE_LOCAL}, ["IDENTITY"],
                       "evergreen-pd")
    hidden = _row("ServiceEncounter", HIDDEN, NOW - timedelta(days=3),
                  {"service_type": "SUD_TREATMENT"}, ["SUD_TREATMENT"], "riverbend-sud")
    assigned = _row("CaseManagerAssigned", MISSED, NOW - timedelta(days=28),
                    {"case_manager": ANA_AS_CASE_MANAGER, "agency": None}, ["PROGRAM_STATUS"],
                    "harbor-cm")
    consents = [
        _row("ConsentGranted", MISSED, NOW - timedelta(days=20), _consent(
            ACTIVE_CONSENT, ["cedar-housing", "role:defender"], ["HOUSING", "CONTACT"],
            NOW - timedelta(days=20), NOW + timedelta(days=345), "a" * 64), ["CONSENT"],
            "harbor-cm"),
        _row("ConsentGranted", MISSED, NOW - timedelta(days=25), _consent(
            REVOKED_CONSENT, ["northside-mh"], ["MENTAL_HEALTH"], NOW - timedelta(days=25),
            None, "b" * 64), ["CONSENT"], "harbor-cm"),
        _row("ConsentRevoked", MISSED, NOW - timedelta(days=10),
             {"consent_id": REVOKED_CONSENT}, ["CONSENT"], "harbor-cm"),
    ]
    # harbor-cm sees the police link row (IDENTITY: always) but may not find the person by it
    return {"harbor-cm": [referral, missed, harbor_link, {**police_link}, assigned, *consents],
            "evergreen-pd": [{**police_link}], "riverbend-sud": [hidden]}


def _consent(consent_id: str, recipients: list[str], categories: list[str],
             valid_from: datetime, expires_at: datetime | None, digest: str) -> dict[str, Any]:
    def instant(at: datetime | None) -> str | None:
        return None if at is None else at.isoformat().replace("+00:00", "Z")

    return {"consent_id": consent_id, "recipients": recipients, "categories": categories,
            "purposes": ["care_coordination"], "valid_from": instant(valid_from),
            "expires_at": instant(expires_at), "exceptions": [], "part2": False,
            "disclosing_programs": [], "expires_on_event": None, "form_sha256": digest}


class Console:
    """The app, its adapters and a few users."""

    def __init__(self, directory: Path | None = None) -> None:
        where = directory or Path(tempfile.mkdtemp(prefix="leadhub-console-"))
        url = f"sqlite:///{where}/view.sqlite"
        store = ViewStore(url)
        store.create_schema()
        view = project_events(simulate(SITE, CATALOG, 16, DAYS, 2011, START),
                              Projector(SITE, CATALOG), at=NOW)
        extra = extra_rows()
        for partner in SITE.partner_ids():
            rows = [r.to_json() for r in rows_for(view, partner)] + extra.get(partner, [])
            store.apply([RowChange(partner, r["event_id"], r) for r in rows], {})
        store.close()
        self.log = MemoryAccessLog()
        self.inbound = MemoryInbound()
        self.app = create_api(ApiConfig(url, KafkaConnection("127.0.0.1:1")), site=SITE,
                              catalog=CATALOG, access_log=self.log, inbound=self.inbound,
                              accounts_engine=None)
        self.now = NOW
        self.app.state.context.clock = lambda: self.now
        self.users = users_of(self.app.state.context)
        self.ana = self.users.create("ana", "harbor-cm")
        self.pat = self.users.create("pat", "evergreen-pd")  # police: TOTP required

    def code(self, issued: IssuedPassword, offset_s: float = 0) -> str:
        """The user's TOTP code at the console's clock (plus ``offset_s``)."""
        assert issued.totp_secret is not None
        return pyotp.TOTP(issued.totp_secret).at(self.now + timedelta(seconds=offset_s))

    def api_token(self, partner: str, user: str) -> dict[str, str]:
        """Staff API headers for the same partner (to compare console and API)."""
        secret = self.app.state.context.credentials.create(partner, "staff", user).secret
        purpose = SITE.partner(partner).purpose  # type: ignore[union-attr]
        return {"Authorization": f"Bearer {secret}", "X-Purpose": purpose}


def csrf(page: Any) -> str:
    """The CSRF token of a console page's forms."""
    found = CSRF.search(page.text)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(http: Any, user: str, password: str, code: str = "",
            purpose: str | None = "care_coordination") -> Any:
    """Sign in through the console's forms (an httpx-style client) and choose ``purpose``;
    the answer of the last step (the caseload, or the failed sign-in's page)."""
    form = http.get("/sign-in")
    answer = http.post("/sign-in", data={"csrf_token": csrf(form), "user": user,
                                         "password": password, "code": code},
                       follow_redirects=False)
    if answer.status_code != 303 or purpose is None:
        return answer
    page = http.get("/purpose")
    return http.post("/purpose", data={"csrf_token": csrf(page), "purpose": purpose},
                     follow_redirects=True)
