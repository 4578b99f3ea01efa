"""A simulated site through the whole pipeline equals the offline projection of the same events.

Also: kill -9 each process in turn mid-stream and restart it; the view must still equal a clean
offline projection — nothing lost, nothing doubled.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.offline import project_events, rows_for
from processors.projector import Projector
from processors.site import load_site
from producers.sdk import publish_by_source
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
START = datetime(2025, 3, 1, tzinfo=UTC)


def _site_events(hub: Any, participants: int, days: int, seed: int) -> list[Event]:
    from pathlib import Path

    site = load_site(Path(hub.env["LEADHUB_SITE_FILE"]))
    return list(simulate(site, CATALOG, participants, days, seed, START))


def _expected(hub: Any, events: list[Event]) -> dict[str, list[dict[str, Any]]]:
    from pathlib import Path

    site = load_site(Path(hub.env["LEADHUB_SITE_FILE"]))
    view = project_events(iter(events), Projector(site, CATALOG), at=datetime.now(UTC))
    return {partner: [row.to_json() for row in rows_for(view, partner)]
            for partner in site.partner_ids()}


def _matches(live_view: Any, expected: dict[str, list[dict[str, Any]]]) -> bool:
    return all(live_view.rows(partner) == rows for partner, rows in expected.items())


def _explain(live_view: Any, expected: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for partner, rows in expected.items():
        live = live_view.rows(partner)
        if live != rows:
            live_ids = {r["event_id"] for r in live}
            want_ids = {r["event_id"] for r in rows}
            changed = [r["event_id"] for r in rows if r["event_id"] in live_ids
                       and r not in live]
            missing = sorted(f"{r['type']}@{r['occurred_at']}" for r in rows
                             if r["event_id"] not in live_ids)
            lines.append(f"{partner}: live {len(live)} rows, offline {len(rows)}; missing "
                         f"{len(want_ids - live_ids)} {missing[:5]}, extra "
                         f"{len(live_ids - want_ids)}, differing {len(changed)}")
    return "; ".join(lines)


def test_published_site_equals_offline_projection(hub: Any, topics: TopicNames,
                                                  kafka: KafkaConnection,
                                                  live_view: Any) -> None:
    hub.start("validator")
    hub.start("projector")
    events = _site_events(hub, participants=40, days=120, seed=11)
    publish_by_source(events, lambda _partner: kafka, catalog=CATALOG, topics=topics)
    expected = _expected(hub, events)
    assert sum(len(rows) for rows in expected.values()) > len(events)
    try:
        live_view.wait_for(lambda: _matches(live_view, expected), timeout_s=120)
    except BaseException:
        print(_explain(live_view, expected))
        raise


def _killer(hub: Any, order: Iterator[str]) -> None:
    """Every two seconds, kill -9 the next step of ``order`` and start it again."""
    for step in order:
        time.sleep(2.0)
        hub.kill(step, signal.SIGKILL)
        hub.start(step)


def _publish_while(action: Callable[[], None], events: list[Event], kafka: KafkaConnection,
                   topics: TopicNames, rate: float) -> None:
    """Publish ``events`` at ``rate`` through the SDK while ``action`` runs in a thread."""
    worker = threading.Thread(target=action)
    worker.start()
    try:
        publish_by_source(events, lambda _partner: kafka, catalog=CATALOG, topics=topics, rate=rate)
    finally:
        worker.join()


def test_kill_dash_nine_each_process_mid_stream_loses_and_doubles_nothing(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, database_url: str, live_view: Any
) -> None:
    for step in ("validator", "projector"):
        hub.start(step)
    events = _site_events(hub, participants=60, days=180, seed=23)
    _publish_while(lambda: _killer(hub, iter(["validator", "projector", "validator",
                                              "projector"])),
                   events, kafka, topics, rate=250)
    expected = _expected(hub, events)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not _matches(live_view, expected):
        time.sleep(1.0)
    assert _matches(live_view, expected), _explain(live_view, expected)


def test_projectors_joining_and_leaving_mid_stream_lose_and_double_nothing(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any
) -> None:
    """Scale the projector out to two workers and back while events flow: two rebalances,
    each moving table partitions between workers under backpressure."""
    hub.start("validator")
    hub.start("projector")
    events = _site_events(hub, participants=60, days=180, seed=31)

    def scale() -> None:
        time.sleep(2.0)
        hub.start("projector", name="projector-2")
        time.sleep(8.0)
        hub.kill("projector", signal.SIGTERM)

    _publish_while(scale, events, kafka, topics, rate=120)
    expected = _expected(hub, events)
    try:
        live_view.wait_for(lambda: _matches(live_view, expected), timeout_s=150)
    except BaseException:
        print(_explain(live_view, expected))
        print(hub.log_tail("projector-2"))
        raise
    assert _heads_follow_input(kafka, topics, live_view)


def _heads_follow_input(kafka: KafkaConnection, topics: TopicNames, live_view: Any) -> bool:
    """Every participant's stored head names the lead.events partition its events are on."""
    from sqlalchemy import select

    from consumers.audit.kafka_log import TopicReader
    from consumers.projection_store import participant_heads

    found: dict[str, set[int]] = {}
    with TopicReader(kafka, topics.events, client_id="leadhub-test-heads") as reader:
        for record in reader.read(reader.end_offsets()):
            if record.key is not None:
                found.setdefault(record.key.decode(), set()).add(record.partition)
    with live_view.store.engine.connect() as connection:
        heads = dict(connection.execute(
            select(participant_heads.c.participant_id, participant_heads.c.partition)).all())
    assert heads, "no participant heads stored"
    return all(found.get(pid) == {partition} for pid, partition in heads.items())
