"""What a console page costs the databases: a filtered caseload page reads the participants it
needs (a page's worth first, more only if the filter drops lines; never more than the page's
limit), and a page read does not write the session row unless its recorded last use is a
minute old. Figures under load: bench/console.py and BENCHMARKS.md."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from consumers.api.accounts import open_accounts
from consumers.api.tables import console_sessions
from consumers.console import listing, pages
from consumers.console.sessions import TOUCH_EVERY, Sessions
from consumers.console.users import StaffUsers
from tests.console_seed import SITE, Console, sign_in

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

ENTRY = re.compile(r'<td><a href="/participants/(p-[0-9a-f]{16})">')


@pytest.fixture(scope="module")
def console() -> Console:
    return Console()


@pytest.fixture
def http(console: Console) -> Iterator[TestClient]:
    with TestClient(console.app) as client:
        yield client


def _api_lines(http: TestClient, console: Console) -> list[dict[str, Any]]:
    headers = console.api_token("harbor-cm", "ana-api-costs")
    lines: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = http.get("/v1/participants", headers=headers,
                        params={"limit": 200, **({"cursor": cursor} if cursor else {})}).json()
        lines += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return lines


class ReadCounter:
    """Wraps ``ViewQueries.caseload_rows`` to note how many participants each call asked for."""

    def __init__(self, views: Any) -> None:
        self.inner = views.caseload_rows
        self.asked: list[int] = []

    def __call__(self, recipient: str, after: str | None, limit: int, types: Any) -> Any:
        self.asked.append(limit)
        return self.inner(recipient, after, limit, types)


def _walk(http: TestClient, url: str, reads: ReadCounter) -> tuple[list[str], list[int]]:
    """Every participant id shown from ``url`` on, following "Next page"; and the most
    participants one page read."""
    shown: list[str] = []
    most: list[int] = []
    while True:
        reads.asked.clear()
        page = http.get(url)
        assert page.status_code == 200
        shown += ENTRY.findall(page.text)
        most.append(sum(reads.asked))
        more = re.search(r'href="(/\?[^"]*after=[^"]+)">Next page', page.text)
        if not more:
            return shown, most
        url = more.group(1).replace("&amp;", "&")


@pytest.mark.parametrize(("query", "keep"), [
    ("", lambda e: True),
    ("status=enrolled", lambda e: e["status"] == "enrolled"),
    ("status=referred", lambda e: e["status"] == "referred"),
    ("missed=1", lambda e: bool(e["intake"] and e["intake"]["overdue"])),
])
def test_filtered_pages_read_what_they_need_and_show_every_line_once(
        console: Console, http: TestClient, monkeypatch: pytest.MonkeyPatch, query: str,
        keep: Any) -> None:
    lines = _api_lines(http, console)
    wanted = [e["participant_id"] for e in lines if keep(e)]
    assert len(lines) > 12 and wanted  # several pages, something to find
    monkeypatch.setattr(pages, "PAGE_SIZE", 3)
    monkeypatch.setattr(listing, "CHUNK", 5)
    monkeypatch.setattr(listing, "MAX_CHUNKS", 2)  # a page reads at most 10 participants
    views = http.app.state.context.views  # type: ignore[attr-defined]
    reads = ReadCounter(views)
    monkeypatch.setattr(views, "caseload_rows", reads)
    sign_in(http, "ana", console.ana.password)
    reads.asked.clear()
    http.get(f"/?{query}")
    assert reads.asked[0] == 4  # one page's worth (and one to know there is more) first
    shown, most = _walk(http, f"/?{query}", reads)
    assert shown == wanted
    assert max(most) <= (4 if not query else 10)


@pytest.fixture
def sessions(database_url: str) -> Iterator[tuple[Sessions, list[datetime]]]:
    engine = open_accounts(database_url)
    now = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    StaffUsers(engine, SITE, clock=lambda: now[0]).create("sam", "harbor-cm")
    yield Sessions(engine, SITE, clock=lambda: now[0]), now
    engine.dispose()


def _last_seen(store: Sessions) -> datetime:
    with store.engine.connect() as connection:
        value = connection.execute(select(console_sessions.c.last_seen_at)).scalar_one()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_page_reads_write_the_session_at_most_once_a_minute(
        sessions: tuple[Sessions, list[datetime]]) -> None:
    store, now = sessions
    partner = SITE.partner("harbor-cm")
    assert partner is not None
    token, _ = store.start("sam", partner)
    signed = now[0]
    for seconds in (1, 20, 59):
        now[0] = signed + timedelta(seconds=seconds)
        assert store.resume(token) is not None
        assert _last_seen(store) == signed  # not written
    now[0] = signed + TOUCH_EVERY
    assert store.resume(token) is not None and _last_seen(store) == now[0]
    touched = now[0]
    # The last request (59 s after the last write) is not recorded, so the idle timeout
    # counts from the write: the session ends up to a minute early, never late.
    now[0] = touched + timedelta(seconds=59)
    assert store.resume(token) is not None and _last_seen(store) == touched
    now[0] = touched + store.idle + timedelta(seconds=1)
    assert store.resume(token) is None
    now[0] = touched + timedelta(seconds=70)
    assert store.resume(token) is None  # ended stays ended
