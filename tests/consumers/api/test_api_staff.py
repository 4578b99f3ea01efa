"""The staff query API over rows in the SQL view (SQLite and PostgreSQL), with accounting."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.store import RowChange, ViewStore
from processors.policy import REDISCLOSURE_NOTICE
from schemas.kafka_connection import KafkaConnection
from tests.factories import SITE, participant_id

with warnings.catch_warnings():  # starlette's note about httpx2, at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
CM = {"X-Purpose": "care_coordination"}
PAO = {"X-Purpose": "prosecution_decision"}
#: Three participants, named so that they sort A < B < C as the caseload orders them.
P_A, P_B, P_C = sorted(participant_id(name) for name in "ABC")
P_NOBODY = participant_id("nobody")


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def row(type_: str, participant: str, days: float, fields: dict[str, Any],
        categories: list[str], consent_ids: tuple[str, ...] = (), notice: bool = False,
        source: str = "harbor-cm") -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": type_, "participant_id": participant,
            "occurred_at": at(days), "source_partner": source, "fields": fields,
            "categories": categories, "consent_ids": list(consent_ids),
            "notice": REDISCLOSURE_NOTICE if notice else None}


class Site:
    """A view database with rows for harbor-cm and county-pao, and an API over it."""

    def __init__(self, database_url: str) -> None:
        self.store = ViewStore(database_url)
        self.store.create_schema()
        self.log = MemoryAccessLog()
        self.app = create_api(ApiConfig(database_url, KafkaConnection("127.0.0.1:1")), site=SITE,
                              access_log=self.log)
        self.app.state.context.clock = lambda: NOW
        creds = self.app.state.context.credentials
        self.cm = {"Authorization": f"Bearer {creds.create('harbor-cm', 'staff', 'ana').secret}"}
        self.pao = {"Authorization":
                    f"Bearer {creds.create('county-pao', 'staff', 'bo').secret}"}
        self.rows: dict[str, list[dict[str, Any]]] = {"harbor-cm": [], "county-pao": []}

    def add(self, recipient: str, *rows: dict[str, Any]) -> None:
        self.rows[recipient].extend(rows)
        self.store.apply([RowChange(recipient, r["event_id"], r) for r in rows], {})


@pytest.fixture
def site(database_url: str) -> Iterator[Site]:
    s = Site(database_url)
    referral = row("ReferralMade", P_A, 0, {"door": "ARREST_DIVERSION",
                                              "charges_held": True}, ["REFERRAL", "LEGAL_CASE"],
                   source="evergreen-pd")
    intake = row("IntakeCompleted", P_A, 3, {"referral_event_id": referral["event_id"]},
                 ["PROGRAM_STATUS"])
    s.add("harbor-cm", referral, intake,
          row("CaseManagerAssigned", P_A, 4, {"case_manager": "R. Ortiz"}, ["PROGRAM_STATUS"]),
          row("ContactLogged", P_A, 5, {"contact_method": "OUTREACH"}, ["PROGRAM_STATUS"]),
          row("ServiceEncounter", P_A, 6, {"service_type": "SUD_TREATMENT"},
              ["SUD_TREATMENT"], consent_ids=("c-part2",), notice=True, source="riverbend-sud"),
          row("ReferralMade", P_B, 10, {"door": "ARREST_DIVERSION", "charges_held": True},
              ["REFERRAL", "LEGAL_CASE"], source="evergreen-pd"),
          row("ReferralMade", P_C, 1, {"door": "SOCIAL_CONTACT", "charges_held": False},
              ["REFERRAL"], source="evergreen-pd"),
          row("ParticipantExited", P_C, 20, {"reason": "COMPLETED"}, ["PROGRAM_STATUS"]))
    s.add("county-pao", {**referral}, {**intake})
    with TestClient(s.app) as http:
        s.http = http  # type: ignore[attr-defined]
        yield s
    s.store.close()


def get(s: Site, path: str, auth: dict[str, str], purpose: dict[str, str] = CM,
        **params: Any) -> Any:
    return s.http.get(path, headers={**auth, **purpose}, params=params)  # type: ignore[attr-defined]


def test_caseload_is_built_from_the_callers_rows(site: Site) -> None:
    page = get(site, "/v1/participants", site.cm).json()
    by_id = {e["participant_id"]: e for e in page["items"]}
    assert list(by_id) == [P_A, P_B, P_C] and page["next_cursor"] is None
    assert by_id[P_A] == {"participant_id": P_A, "status": "enrolled",
                            "door": "ARREST_DIVERSION", "case_manager": "R. Ortiz",
                            "intake": {"status": "met", "due_at": at(14), "overdue": False},
                            "last_contact": at(5)}
    assert by_id[P_B]["status"] == "referred"
    assert by_id[P_B]["intake"] == {"status": "pending", "due_at": at(24), "overdue": True}
    assert by_id[P_C]["status"] == "exited" and by_id[P_C]["intake"] is None
    record = site.log.records[-1]
    assert (record.user, record.partner, record.purpose) == ("ana", "harbor-cm",
                                                             "care_coordination")
    assert list(record.participant_ids) == [P_A, P_B, P_C]
    pao = get(site, "/v1/participants", site.pao, PAO).json()["items"]
    assert [e["participant_id"] for e in pao] == [P_A]
    assert pao[0]["case_manager"] is None  # county-pao has no such row


def test_pagination_edges(site: Site) -> None:
    first = get(site, "/v1/participants", site.cm, limit=2).json()
    assert [e["participant_id"] for e in first["items"]] == [P_A, P_B]
    last = get(site, "/v1/participants", site.cm, limit=2, cursor=first["next_cursor"]).json()
    assert [e["participant_id"] for e in last["items"]] == [P_C]
    assert last["next_cursor"] is None
    exact = get(site, "/v1/participants", site.cm, limit=3).json()
    assert exact["next_cursor"] is None
    nobody = get(site, "/v1/participants", site.pao, PAO, cursor=first["next_cursor"]).json()
    assert nobody == {"items": [], "next_cursor": None}
    timeline = f"/v1/participants/{P_A}/timeline"
    pages, cursor = [], None
    while True:
        page = get(site, timeline, site.cm, limit=2, **({"cursor": cursor} if cursor else {}))
        pages.append([r["event_id"] for r in page.json()["items"]])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    expected = sorted((r for r in site.rows["harbor-cm"] if r["participant_id"] == P_A),
                      key=lambda r: (r["occurred_at"], r["event_id"]))
    assert [e for page in pages for e in page] == [r["event_id"] for r in expected]
    for bad in ("garbage", "e30", first["next_cursor"][:-3], "eyJsIjoieCJ9", "%00"):
        response = get(site, "/v1/participants", site.cm, cursor=bad)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "INVALID_CURSOR"
    wrong_listing = get(site, timeline, site.cm, cursor=first["next_cursor"])
    assert wrong_listing.status_code == 400
    for bad_limit in (0, 201, "x"):
        response = get(site, "/v1/participants", site.cm, limit=bad_limit)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "INVALID_PARAMETER"


def test_unseen_participant_is_byte_identical_to_a_missing_one(site: Site) -> None:
    for path in ("/v1/participants/{}", "/v1/participants/{}/timeline"):
        hidden = get(site, path.format(P_B), site.pao, PAO)
        missing = get(site, path.format(P_NOBODY), site.pao, PAO)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.content == missing.content
        assert hidden.headers["content-length"] == missing.headers["content-length"]
        assert get(site, path.format(P_B), site.cm).status_code == 200
    assert site.log.records[-2].participant_ids == ()


def test_summary_timeline_filters_and_part2_notice(site: Site) -> None:
    summary = get(site, f"/v1/participants/{P_A}", site.cm).json()
    assert summary["rows"] == 5 and summary["part2_rows"] == 1
    assert summary["counts_by_type"]["ServiceEncounter"] == 1
    assert summary["counts_by_category"]["SUD_TREATMENT"] == 1
    timeline = f"/v1/participants/{P_A}/timeline"
    part2 = get(site, timeline, site.cm, category="SUD_TREATMENT").json()["items"]
    assert [r["type"] for r in part2] == ["ServiceEncounter"]
    assert part2[0]["notice"] == REDISCLOSURE_NOTICE
    record = site.log.records[-1]
    assert record.event_ids == [part2[0]["event_id"]]
    assert record.consent_ids == ["c-part2"]
    typed = get(site, timeline, site.cm, type=["ContactLogged", "IntakeCompleted"]).json()
    assert [r["type"] for r in typed["items"]] == ["IntakeCompleted", "ContactLogged"]
    window = get(site, timeline, site.cm, since=at(3), until=at(5)).json()["items"]
    assert [r["type"] for r in window] == ["IntakeCompleted", "CaseManagerAssigned"]
    assert get(site, timeline, site.cm, since=at(30)).json() == {"items": [],
                                                                 "next_cursor": None}
    bad: list[dict[str, Any]] = [{"type": "NoSuchType"}, {"category": "NOPE"},
                                 {"since": "yesterday"}]
    for params in bad:
        assert get(site, timeline, site.cm, **params).status_code == 400


def test_intake_deadlines(site: Site) -> None:
    pending = get(site, "/v1/intake-deadlines", site.cm).json()["items"]
    assert [(d["participant_id"], d["status"]) for d in pending] == [(P_B, "pending")]
    everything = get(site, "/v1/intake-deadlines", site.cm, status="all").json()["items"]
    assert [(d["participant_id"], d["status"]) for d in everything] == [
        (P_A, "met"), (P_B, "pending")]
    early = get(site, "/v1/intake-deadlines", site.cm, status="all", due_before=at(20))
    assert [d["participant_id"] for d in early.json()["items"]] == [P_A]
    assert get(site, "/v1/intake-deadlines", site.cm, status="late").status_code == 400
    pao = get(site, "/v1/intake-deadlines", site.pao, PAO, status="all").json()["items"]
    assert [d["participant_id"] for d in pao] == [P_A]


def test_purpose_is_required_and_must_be_the_partners(site: Site) -> None:
    missing = site.http.get("/v1/participants", headers=site.cm)  # type: ignore[attr-defined]
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "PURPOSE_REQUIRED"
    unknown = get(site, "/v1/participants", site.cm, {"X-Purpose": "marketing"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "UNKNOWN_PURPOSE"
    other = get(site, "/v1/participants", site.cm, PAO)
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "PURPOSE_NOT_PERMITTED"
    me = site.http.get("/v1/me", headers=site.cm).json()  # type: ignore[attr-defined]
    harbor = SITE.partner("harbor-cm")
    assert harbor is not None
    assert me == {"partner": "harbor-cm", "partner_name": harbor.name,
                  "role": "case_management", "user": "ana", "purposes": ["care_coordination"],
                  "intake_deadline_days": 14}


def test_no_access_record_no_answer(site: Site) -> None:
    site.log.fail = True
    response = get(site, f"/v1/participants/{P_A}/timeline", site.cm)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "AUDIT_UNAVAILABLE"
    assert P_A not in response.text and "R. Ortiz" not in response.text


def test_every_error_has_the_one_shape(site: Site) -> None:
    http = site.http  # type: ignore[attr-defined]
    for response in (http.get("/v1/nowhere"), http.delete("/v1/me", headers=site.cm),
                     get(site, "/v1/participants", site.cm, limit=-1)):
        assert set(response.json()) == {"error"}
        assert {"code", "message"} <= set(response.json()["error"])


def test_leadhub_view_through_the_api(site: Site, database_url: str, monkeypatch: Any,
                                      capsys: Any) -> None:
    import json
    import socket
    import threading
    import time

    import uvicorn

    from leadhub.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(site.app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        token = site.cm["Authorization"].split()[1]
        monkeypatch.setenv("LEADHUB_DATABASE_URL", database_url)
        direct = json.loads(json.dumps(site.store.rows_for("harbor-cm", None)))
        assert main(["view", "--as", "harbor-cm", "--json", "--api",
                     f"http://127.0.0.1:{port}", "--token", token]) == 0
        assert json.loads(capsys.readouterr().out) == direct
        assert main(["view", "--as", "county-pao", "--api", f"http://127.0.0.1:{port}",
                     "--token", token]) == 1  # the token is harbor-cm's
    finally:
        server.should_exit = True
        thread.join(timeout=10)
