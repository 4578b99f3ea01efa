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

import pyotp
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
    csrf,
    sign_in,
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


def _api_caseload(http: TestClient, console: Console, partner: str,
                  user: str) -> list[dict[str, Any]]:
    """Every caseload line the staff API gives ``partner``, in its order."""
    headers = console.api_token(partner, user)
    lines: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = http.get("/v1/participants", headers=headers,
                        params={"limit": 200, **({"cursor": cursor} if cursor else {})}).json()
        lines += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return lines


def _walk(http: TestClient, url: str) -> list[str]:
    """Participant ids of every page from ``url``, following "Next page"."""
    shown: list[str] = []
    while True:
        page = http.get(url)
        assert page.status_code == 200
        shown += _entries(page.text)
        assert list(console_log(http).records[-1].participant_ids) == _entries(page.text)
        more = re.search(r'href="(/\?[^"]*)">Next page', page.text)
        if not more:
            return shown
        url = more.group(1).replace("&amp;", "&")


def console_log(http: TestClient) -> Any:
    log = http.app.state.context.access_log  # type: ignore[attr-defined]
    return log


def test_assigned_to_me_matches_the_display_name_or_the_user_name(
        console: Console, http: TestClient) -> None:
    lines = _api_caseload(http, console, "harbor-cm", "ana-api-mine")
    names = [e["case_manager"] for e in lines if e["case_manager"] not in (None, "Ana")]
    assert names, "the seed has no other case manager"
    other = max(set(names), key=names.count)
    sign_in(http, "ana", console.ana.password)  # no display name: her user name, any case
    assert _entries(http.get("/", params={"mine": "1"}).text) == [MISSED]
    assert "Case manager is ana" in http.get("/").text
    mine = _walk(http, "/?mine=1&sort=participant")
    assert mine == [MISSED]
    console.users.create("kit", "harbor-cm", password="kit's long password",
                         display_name=f"  {other.upper()}  ")
    with TestClient(console.app) as kit:
        sign_in(kit, "kit", "kit's long password")
        expected = [e["participant_id"] for e in lines if e["case_manager"] == other]
        assert _walk(kit, "/?mine=1") == expected and len(expected) >= 1
        assert _entries(kit.get("/", params={"mine": "1", "status": "enrolled"}).text) == [
            e["participant_id"] for e in lines
            if e["case_manager"] == other and e["status"] == "enrolled"]
        console.users.set_display_name("kit", None)  # now "kit": nobody's case manager
        assert _entries(kit.get("/", params={"mine": "1"}).text) == []


def test_sorting_by_deadline_and_last_contact(console: Console, http: TestClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.console import pages
    from processors.timefmt import parse_instant

    lines = _api_caseload(http, console, "harbor-cm", "ana-api-sort")
    pending = sorted((e for e in lines if e["intake"] and e["intake"]["status"] == "pending"),
                     key=lambda e: (parse_instant(e["intake"]["due_at"]), e["participant_id"]))
    by_deadline = [e["participant_id"] for e in pending] + sorted(
        e["participant_id"] for e in lines if e not in pending)
    never = sorted(e["participant_id"] for e in lines if not e["last_contact"])
    by_contact = never + [e["participant_id"] for e in sorted(
        (e for e in lines if e["last_contact"]),
        key=lambda e: (parse_instant(e["last_contact"]), e["participant_id"]))]
    assert pending and never and by_deadline != by_contact
    monkeypatch.setattr(pages, "PAGE_SIZE", 4)  # several pages
    sign_in(http, "ana", console.ana.password)
    assert _walk(http, "/?sort=deadline") == by_deadline
    assert _walk(http, "/?sort=last_contact") == by_contact
    assert _walk(http, "/?sort=participant") == [e["participant_id"] for e in lines]
    enrolled = [p for p in by_deadline
                if next(e for e in lines if e["participant_id"] == p)["status"] == "enrolled"]
    assert _walk(http, "/?sort=deadline&status=enrolled") == enrolled
    assert _walk(http, "/?sort=nonsense") == [e["participant_id"] for e in lines]


def test_consent_panel_from_the_callers_consent_rows(console: Console,
                                                      http: TestClient) -> None:
    from tests.console_seed import ACTIVE_CONSENT, REVOKED_CONSENT

    sign_in(http, "ana", console.ana.password)
    page = http.get(f"/participants/{MISSED}").text
    panel = page[page.index('id="consents-heading"'):page.index("<h2>Timeline</h2>")]
    consents = re.findall(r'<h3 id="consent-\d+">Consent (\S+) <span class="badge[^"]*">'
                          r"([^<]+)</span>", panel)
    assert consents == [(ACTIVE_CONSENT, "active"), (REVOKED_CONSENT, "revoked")]
    active = panel[:panel.index(REVOKED_CONSENT)]
    for shown in ("housing, contact", "care coordination",
                  "Cedar Commons Supportive Housing (cedar-housing); every defender partner",
                  "Harbor Street Outreach", "SHA-256 " + "a" * 64):
        assert shown in active, shown
    assert "Revoked</dt>" in panel[panel.index(REVOKED_CONSENT):]
    consents_read = console.log.records[-1]
    assert consents_read.endpoint == "console /participants/{participant_id} consents"
    assert consents_read.user == "ana" and consents_read.participant_ids == (MISSED,)
    assert len(consents_read.event_ids) == 3  # two grants and the revocation
    other = next(p for p in _entries(http.get("/").text) if p != MISSED)
    none_yet = http.get(f"/participants/{other}").text
    assert 'id="consents-heading"' in none_yet and (
        'id="no-consents"' in none_yet or "Consent p-" in none_yet)
    console.log.fail = True
    try:
        assert http.get(f"/participants/{MISSED}").status_code == 503
    finally:
        console.log.fail = False
    police = console.users.create("pip", "evergreen-pd", password="pip's long password")
    with TestClient(console.app) as second:
        sign_in(second, "pip", police.password, console.code(police, 60),
                purpose="diversion_referral")
        seen = second.get(f"/participants/{MISSED}")
        assert seen.status_code == 200 and "Consent" not in seen.text  # CONSENT: never


def test_consent_states_read_from_rows() -> None:
    from datetime import UTC, datetime

    from consumers.console.consents import consent_lines
    from tests.console_seed import SITE

    def row(type_: str, day: int, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "occurred_at": f"2026-03-{day:02d}T12:00:00Z",
                "source_partner": "harbor-cm", "fields": fields}

    def grant(consent_id: str, day: int, **more: Any) -> dict[str, Any]:
        fields = {"consent_id": consent_id, "recipients": ["harbor-cm"],
                  "categories": ["HOUSING"], "purposes": ["care_coordination"],
                  "valid_from": f"2026-03-{day:02d}T12:00:00Z", **more}
        return row("ConsentGranted", day, **fields)

    rows = [grant("open", 1), grant("dated", 2, expires_at="2026-03-20T00:00:00Z"),
            grant("exit", 3, expires_on_event="PROGRAM_EXIT"),
            grant("later", 4, valid_from="2026-04-01T00:00:00Z"),
            grant("gone", 5), row("ConsentRevoked", 15, consent_id="gone"),
            row("ParticipantExited", 18)]

    def states(day: int) -> dict[str, str]:
        now = datetime(2026, 3, day, 13, tzinfo=UTC)
        return {line.consent_id: line.state for line in consent_lines(rows, SITE, now)}

    assert states(10) == {"open": "active", "dated": "active", "exit": "active",
                          "later": "not yet in effect", "gone": "active"}
    assert states(19) == {"open": "active", "dated": "active",
                          "exit": "ended at program exit", "later": "not yet in effect",
                          "gone": "revoked"}
    assert states(25)["dated"] == "expired"
    lines = consent_lines(rows, SITE, datetime(2026, 3, 25, tzinfo=UTC))
    assert [line.consent_id for line in lines][:1] == ["open"]  # active first
    exit_line = next(line for line in lines if line.consent_id == "exit")
    assert exit_line.ends == "at program exit" and exit_line.ended_at == "2026-03-18 12:00 UTC"
    assert consent_lines([row("ParticipantExited", 2)], SITE,
                         datetime(2026, 3, 3, tzinfo=UTC)) == []


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
    timeline_read, consents_read = console.log.records[-2:]
    assert timeline_read.endpoint == "console /participants/{participant_id}"
    assert timeline_read.event_ids == [r["event_id"] for r in rows]
    assert consents_read.endpoint == "console /participants/{participant_id} consents"
    written = len(console.log.records)
    hidden = http.get(f"/participants/{HIDDEN}")
    nobody = http.get("/participants/p-00000000000000aa")
    assert hidden.status_code == nobody.status_code == 404
    assert _strip_tokens(hidden.text) == _strip_tokens(nobody.text)
    assert [r.endpoint for r in console.log.records[written:]] == [
        "console /participants/{participant_id}"] * 2  # no consent read behind a 404


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
    assert main(["users", "create", "bo", "--partner", "harbor-cm", "--name", "B.  Oak"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # no second factor required
    assert main(["users", "disable", "bo"]) == 0
    assert main(["users", "reset-password", "kim"]) == 0
    assert main(["users", "set-name", "kim", "K. Moss"]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--json"]) == 0
    listed = {u["user"]: u for u in json.loads(capsys.readouterr().out)}
    assert listed["kim"]["totp"] and not listed["kim"]["disabled"]
    assert listed["bo"]["disabled"] and not listed["bo"]["totp"]
    assert (listed["bo"]["name"], listed["kim"]["name"]) == ("B. Oak", "K. Moss")
    assert main(["users", "set-name", "kim", ""]) == 0
    assert main(["users", "set-name", "nobody", "X"]) == 1


def test_the_demo_makes_a_console_user_per_role_and_renews_them(tmp_path: Any) -> None:
    from consumers.api.accounts import open_accounts
    from consumers.console.users import StaffUsers
    from leadhub.demo import _issue_console_users
    from leadhub.settings import load_settings
    from tests.console_seed import SITE

    settings = load_settings({"LEADHUB_STATE_DIR": str(tmp_path)})
    first = _issue_console_users(settings, SITE, {"case_management": "J. Testwell"})
    assert sorted(u.role for u in first) == sorted({p.role for p in SITE.partners})
    assert {u.role for u in first if u.totp_secret} == {"police", "prosecutor"}
    again = _issue_console_users(settings, SITE, {"case_management": "R. Sampleton"})
    assert [u.user_name for u in again] == [u.user_name for u in first]
    for old, new in zip(first, again, strict=True):
        assert new.password != old.password
        assert (new.totp_secret is None) == (old.totp_secret is None)
        assert new.totp_secret is None or new.totp_secret != old.totp_secret
    engine = open_accounts(settings.accounts_database_url)
    try:
        users = StaffUsers(engine, SITE)
        manager = next(u for u in again if u.role == "case_management")
        assert users.get(manager.user_name).display_name == "R. Sampleton"
        officer = next(u for u in again if u.role == "police")
        assert officer.totp_secret is not None
        code = pyotp.TOTP(officer.totp_secret).now()
        assert users.verify(officer.user_name, officer.password, code)[1].id == "evergreen-pd"
    finally:
        engine.dispose()


def _named(console: Console, partner: str, user: str) -> dict[str, set[str]]:
    """Participant ids by the preferred names in ``partner``'s rows, read through the API."""
    api = console.api_token(partner, user)
    app = TestClient(console.app)
    names: dict[str, set[str]] = {}
    for entry in app.get("/v1/participants", headers=api, params={"limit": 200}).json()["items"]:
        pid = entry["participant_id"]
        timeline = app.get(f"/v1/participants/{pid}/timeline", headers=api,
                           params={"limit": 200}).json()["items"]
        for row in timeline:
            name = (row.get("fields") or {}).get("preferred_name")
            if name:
                names.setdefault(name.split()[-1].casefold(), set()).add(pid)
    return names


def test_search_by_name_only_where_the_role_sees_names(console: Console,
                                                       http: TestClient) -> None:
    harbor = _named(console, "harbor-cm", "ana-names")
    assert harbor, "the seed has no preferred_name visible to harbor-cm"
    surname, expected = sorted(harbor.items())[0]
    sign_in(http, "ana", console.ana.password)
    found = http.get("/", params={"q": surname.upper()})
    assert set(_entries(found.text)) == expected  # case-insensitive, a part of the name
    assert console.log.records[-1].participant_ids == tuple(sorted(expected))
    http.post("/sign-out", data={"csrf_token": csrf(found)})

    police = _named(console, "evergreen-pd", "pat-names")
    officer = console.users.create("officer-names", "evergreen-pd")  # a TOTP of its own
    home = sign_in(http, "officer-names", officer.password, console.code(officer),
                   purpose="diversion_referral")
    assert home.status_code == 200
    seen_by_police = http.get("/", params={"q": surname})
    assert set(_entries(seen_by_police.text)) == police.get(surname, set())
    if not police.get(surname):  # a name only others see looks exactly like nobody
        nobody = http.get("/", params={"q": "zz-nobody"})
        assert _strip_tokens(seen_by_police.text).replace(surname, "Q") == _strip_tokens(
            nobody.text).replace("zz-nobody", "Q")
