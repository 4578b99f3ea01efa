"""The staff console over a seeded view (no Kafka): sign-in, sessions, CSRF, the reading pages
against the staff API's own answers, accounting, search that reveals nobody, recording."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from consumers.api.tables import event_authors
from consumers.console.users import totp_step
from processors.policy import REDISCLOSURE_NOTICE
from tests.console_seed import (
    CSRF,
    HARBOR_LOCAL,
    HIDDEN,
    MISSED,
    POLICE_LOCAL,
    Console,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def console() -> Console:
    return Console()


@pytest.fixture
def http(console: Console) -> Iterator[TestClient]:
    console.now = console.now  # keep the clock where the test leaves it
    with TestClient(console.app) as client:
        yield client


def csrf(page: Any) -> str:
    found = CSRF.search(page.text)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(http: TestClient, user: str, password: str, code: str = "",
            purpose: str | None = "care_coordination") -> Any:
    form = http.get("/sign-in")
    answer = http.post("/sign-in", data={"csrf_token": csrf(form), "user": user,
                                         "password": password, "code": code},
                       follow_redirects=False)
    if answer.status_code != 303 or purpose is None:
        return answer
    page = http.get("/purpose")
    return http.post("/purpose", data={"csrf_token": csrf(page), "purpose": purpose})


def test_sign_in_purpose_and_sign_out(console: Console, http: TestClient) -> None:
    assert http.get("/", follow_redirects=False).headers["location"] == "/sign-in"
    first = sign_in(http, "ana", console.ana.password, purpose=None)
    assert first.status_code == 303 and first.headers["location"] == "/purpose"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert http.get("/", follow_redirects=False).headers["location"] == "/purpose"
    page = http.get("/purpose")
    wrong = http.post("/purpose", data={"csrf_token": csrf(page), "purpose": "treatment"})
    assert wrong.status_code == 400
    home = http.post("/purpose", data={"csrf_token": csrf(page),
                                       "purpose": "care_coordination"})
    assert home.status_code == 200 and "<h1>Caseload</h1>" in home.text
    record = console.log.records[-1]
    assert (record.user, record.partner, record.purpose, record.endpoint) == (
        "ana", "harbor-cm", "care_coordination", "console /")
    assert record.key_id.startswith("console:")
    out = http.post("/sign-out", data={"csrf_token": csrf(home)}, follow_redirects=False)
    assert out.status_code == 303
    assert http.get("/", follow_redirects=False).headers["location"] == "/sign-in"


def test_csrf_less_posts_are_refused(console: Console, http: TestClient) -> None:
    no_token = http.post("/sign-in", data={"user": "ana", "password": console.ana.password})
    assert no_token.status_code == 403
    home = sign_in(http, "ana", console.ana.password)
    sent = len(console.inbound.sent)
    forged = http.post("/record/ContactLogged", data={
        "participant_id": MISSED, "contact_method": "PHONE", "successful": "yes"})
    assert forged.status_code == 403 and len(console.inbound.sent) == sent
    wrong = http.post("/record/ContactLogged", data={
        "csrf_token": "x" * 43, "participant_id": MISSED, "contact_method": "PHONE"})
    assert wrong.status_code == 403 and len(console.inbound.sent) == sent
    assert http.post("/sign-out", data={}).status_code == 403
    assert http.post("/sign-out", data={"csrf_token": csrf(home)}).status_code == 200


def test_totp_required_for_police_and_not_replayable(console: Console,
                                                     http: TestClient) -> None:
    assert console.pat.totp_secret is not None and console.ana.totp_secret is None
    assert sign_in(http, "pat", console.pat.password, "").status_code == 401
    code = console.code(console.pat)
    home = sign_in(http, "pat", console.pat.password, code, purpose="diversion_referral")
    assert home.status_code == 200 and "<h1>Caseload</h1>" in home.text
    http.post("/sign-out", data={"csrf_token": csrf(home)})
    again = sign_in(http, "pat", console.pat.password, code, purpose=None)
    assert again.status_code == 401  # the same code twice: refused
    secret = console.pat.totp_secret
    assert totp_step(secret, code, console.now + timedelta(seconds=90), None) is None


def test_session_idle_timeout_and_lifetime(console: Console, http: TestClient) -> None:
    start = console.now
    try:
        sign_in(http, "ana", console.ana.password)
        console.now = start + timedelta(minutes=14)
        assert http.get("/", follow_redirects=False).status_code == 200
        console.now += timedelta(minutes=14)  # 14 idle minutes again: still alive
        assert http.get("/", follow_redirects=False).status_code == 200
        console.now += timedelta(minutes=16)
        assert http.get("/", follow_redirects=False).headers["location"] == "/sign-in"
        signed = console.now
        sign_in(http, "ana", console.ana.password)
        for _ in range(13 * 6):  # busy all day: every 10 minutes
            console.now += timedelta(minutes=10)
            if http.get("/", follow_redirects=False).status_code != 200:
                break
        assert timedelta(hours=12) < console.now - signed <= timedelta(hours=12, minutes=10)
        assert http.get("/", follow_redirects=False).headers["location"] == "/sign-in"
    finally:
        console.now = start


def test_lock_out_after_five_failures(console: Console, http: TestClient) -> None:
    console.users.create("lee", "lead-coordinator", password="correct horse battery")
    for _ in range(5):
        assert sign_in(http, "lee", "wrong password!!").status_code == 401
    locked = sign_in(http, "lee", "correct horse battery", purpose=None)
    nobody = sign_in(http, "nobody-at-all", "correct horse battery", purpose=None)
    assert locked.status_code == nobody.status_code == 401
    assert _strip_tokens(locked.text) == _strip_tokens(nobody.text)
    assert console.users.get("lee").locked
    reset = console.users.reset_password("lee", password="another good password")
    assert sign_in(http, "lee", reset.password, purpose="program_operations"
                   ).status_code == 200
    console.users.disable("lee")
    assert http.get("/", follow_redirects=False).headers["location"] == "/sign-in"


def _strip_tokens(text: str) -> str:
    return CSRF.sub("", text)


def _entries(html: str) -> list[str]:
    return re.findall(r'<td><a href="/participants/([^"]+)">', html)


def test_caseload_is_the_apis_caseload(console: Console, http: TestClient) -> None:
    sign_in(http, "ana", console.ana.password)
    api = console.api_token("harbor-cm", "ana-api")
    api_ids: list[str] = []
    cursor = None
    while True:
        page = http.get("/v1/participants", headers=api,
                        params={"limit": 25, **({"cursor": cursor} if cursor else {})}).json()
        api_ids += [e["participant_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    shown: list[str] = []
    url = "/"
    while True:
        page = http.get(url)
        assert page.status_code == 200
        shown += _entries(page.text)
        record = console.log.records[-1]
        assert record.endpoint == "console /" and record.purpose == "care_coordination"
        assert list(record.participant_ids) == _entries(page.text)
        more = re.search(r'href="(/\?[^"]*after=[^"]+)">Next page', page.text)
        if not more:
            break
        url = more.group(1).replace("&amp;", "&")
    assert shown == api_ids and MISSED in shown and HIDDEN not in shown


def test_filters_and_overdue(console: Console, http: TestClient) -> None:
    sign_in(http, "ana", console.ana.password)
    missed = http.get("/", params={"missed": "1"}).text
    assert MISSED in _entries(missed) and "overdue" in missed
    api = console.api_token("harbor-cm", "ana-api2")
    deadlines = http.get("/v1/intake-deadlines", headers=api, params={"status": "missed"})
    items = deadlines.json()["items"]
    assert MISSED in [d["participant_id"] for d in items]
    assert all(d["overdue"] is True and d["status"] == "missed" for d in items)
    page = http.get("/deadlines", params={"status": "missed"}).text
    assert MISSED in page and "overdue" in page
    enrolled = http.get("/", params={"status": "enrolled"}).text
    exited = http.get("/", params={"status": "exited"}).text
    assert set(_entries(enrolled)).isdisjoint(_entries(exited))
    assert MISSED not in _entries(enrolled)


def test_search_finds_only_the_callers_own(console: Console, http: TestClient) -> None:
    sign_in(http, "ana", console.ana.password)
    assert _entries(http.get("/", params={"q": MISSED}).text) == [MISSED]
    assert _entries(http.get("/", params={"q": HARBOR_LOCAL}).text) == [MISSED]
    record = console.log.records[-1]
    assert record.endpoint == "console /?q" and record.participant_ids == (MISSED,)
    nobody = http.get("/", params={"q": "p-00000000000000aa"})
    for other in (HIDDEN, POLICE_LOCAL):  # known only to riverbend-sud; a police local id
        found = http.get("/", params={"q": other})
        assert found.status_code == nobody.status_code == 200
        assert _entries(found.text) == []
        assert _strip_tokens(found.text).replace(other, "Q") == _strip_tokens(
            nobody.text).replace("p-00000000000000aa", "Q")
        assert console.log.records[-1].participant_ids == ()


def test_person_page_is_the_apis_timeline(console: Console, http: TestClient) -> None:
    sign_in(http, "ana", console.ana.password)
    api = console.api_token("harbor-cm", "ana-api3")
    with_notice = [pid for pid in _entries(http.get("/").text)
                   if any(r["notice"] for r in http.get(
                       f"/v1/participants/{pid}/timeline", headers=api,
                       params={"limit": 200}).json()["items"])]
    assert with_notice, "the seed has no Part 2 row for harbor-cm"
    pid = with_notice[0]
    rows = http.get(f"/v1/participants/{pid}/timeline", headers=api,
                    params={"limit": 50}).json()["items"]
    page = http.get(f"/participants/{pid}").text
    assert re.findall(r'<section class="row" aria-labelledby="row-([^"]+)"', page) == [
        r["event_id"] for r in rows]
    assert page.count('class="notice part2-notice"') == sum(1 for r in rows if r["notice"])
    assert REDISCLOSURE_NOTICE.split(".")[0] in page
    assert "You do not have access to other data about this person" in page
    record = console.log.records[-1]
    assert record.endpoint == "console /participants/{participant_id}"
    assert record.event_ids == [r["event_id"] for r in rows]
    hidden = http.get(f"/participants/{HIDDEN}")
    nobody = http.get("/participants/p-00000000000000aa")
    assert hidden.status_code == nobody.status_code == 404
    assert _strip_tokens(hidden.text) == _strip_tokens(nobody.text)


def test_police_see_no_clinical_rows(console: Console, http: TestClient) -> None:
    sign_in(http, "pat", console.pat.password, console.code(console.pat, 30),
            purpose="diversion_referral")
    clinical = {"sud treatment", "mental health", "medical"}
    seen: set[str] = set()
    people = _entries(http.get("/").text)
    assert people
    for pid in people[:12]:
        page = http.get(f"/participants/{pid}").text
        for line in re.findall(r'<p class="meta">[^<]* · ([^<·]*)</p>', page):
            seen.update(part.strip() for part in line.split(","))
        assert "part2-notice" not in page
    assert "program status" in seen and not seen & clinical


def test_unreachable_access_log_shows_nothing(console: Console, http: TestClient) -> None:
    sign_in(http, "ana", console.ana.password)
    console.log.fail = True
    try:
        for path in ("/", "/deadlines", f"/participants/{MISSED}", f"/?q={MISSED}"):
            page = http.get(path)
            assert page.status_code == 503 and MISSED not in page.text
    finally:
        console.log.fail = False


def test_record_a_contact_and_a_consent(console: Console, http: TestClient) -> None:
    home = sign_in(http, "ana", console.ana.password)
    token = csrf(home)
    form = http.get(f"/record/ContactLogged?participant_id={MISSED}").text
    for label in ("Contact method", "How contact was made or attempted.", "in person"):
        assert label in form
    bad = http.post("/record/ContactLogged", data={
        "csrf_token": token, "participant_id": MISSED, "contact_method": "CARRIER_PIGEON"})
    assert bad.status_code == 400 and "Contact method" in bad.text
    done = http.post("/record/ContactLogged", data={
        "csrf_token": token, "participant_id": MISSED, "contact_method": "PHONE",
        "successful": "yes", "duration_minutes": "12"})
    assert done.status_code == 200 and "was accepted" in done.text
    partner, event = console.inbound.sent[-1]
    assert (partner, event.type, event.participant_id, event.source_partner) == (
        "harbor-cm", "ContactLogged", MISSED, None)
    assert dict(event.payload) == {"contact_method": "PHONE", "successful": True,
                                   "duration_minutes": 12}
    engine = console.app.state.context.credentials.engine
    with engine.connect() as connection:
        author = connection.execute(event_authors.select().where(
            event_authors.c.event_id == event.event_id)).mappings().one()
    assert author["user_name"] == "ana" and author["published_at"] is not None
    signed = b"%PDF-1.4 signed consent form"
    consent = http.post("/record/ConsentGranted", data={
        "csrf_token": token, "participant_id": MISSED, "consent_id": "c-console-1",
        "recipients": "cedar-housing", "categories": "HOUSING\nBENEFITS",
        "purposes": "care_coordination", "valid_from": "2026-04-01T10:00",
        "exceptions": "[]"}, files={"form_sha256": ("consent.pdf", signed,
                                                     "application/pdf")})
    assert consent.status_code == 200, consent.text
    _, granted = console.inbound.sent[-1]
    assert granted.payload["form_sha256"] == hashlib.sha256(signed).hexdigest()
    assert granted.payload["categories"] == ["HOUSING", "BENEFITS"]
    police_form = http.get("/record/ChargesHeld")
    assert police_form.status_code == 404  # case management may not emit it


def test_docs_and_redoc_load_nothing_from_elsewhere(http: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        page = http.get(path)
        assert page.status_code == 200
        assert re.findall(r"https?://", page.text) == []
        for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
            assert http.get(asset).status_code == 200
        assert "/openapi.json" in page.text


def test_users_cli(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    from leadhub.cli import main

    monkeypatch.setenv("LEADHUB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LEADHUB_ACCOUNTS_DATABASE_URL", raising=False)
    assert main(["users", "create", "kim", "--partner", "county-pao"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[2].startswith("otpauth://totp/")  # prosecutor: TOTP
    assert main(["users", "create", "kim", "--partner", "county-pao"]) == 1
    assert main(["users", "create", "bo", "--partner", "harbor-cm"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # no second factor required
    assert main(["users", "disable", "bo"]) == 0
    assert main(["users", "reset-password", "kim"]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--json"]) == 0
    listed = {u["user"]: u for u in json.loads(capsys.readouterr().out)}
    assert listed["kim"]["totp"] and not listed["kim"]["disabled"]
    assert listed["bo"]["disabled"] and not listed["bo"]["totp"]
