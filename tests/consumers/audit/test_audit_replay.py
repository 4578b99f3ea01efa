"""Replay equals the live view after a messy run on the real broker (SQLite and PostgreSQL).

Messy: a simulated site published while the projector is killed with SIGKILL and restarted, a
consent granted then revoked, a consent that expires while the hub runs (retracted by a clock
tick), and a poison message dead-lettered by the validator.

Time travel both ways: events received in another order than they occurred, asked about by
receipt time (``as-of --at``) and by occurrence time (``as-of --occurred-by``).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from consumers.audit.digest import digest_rows
from consumers.audit.kafka_log import TopicReader
from consumers.audit.replay import ordered_rows
from consumers.store import ViewStore
from processors.site import load_site
from producers.sdk import PartnerPublisher, publish_by_source
from producers.simulator import simulate
from schemas.canonical import decode_canonical
from schemas.catalog import load_catalog
from schemas.codec import decode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import make_event, new_participant_id, participant_id

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
START = datetime(2026, 6, 1, tzinfo=UTC)



def _grant(participant: str, consent_id: str, at: datetime, expires: datetime) -> Event:
    return make_event("ConsentGranted", participant, at, consent_id=consent_id,
                  recipients=["defender-assoc"], categories=["HOUSING"],
                  purposes=["legal_defense"], valid_from=at - timedelta(days=1),
                  expires_at=expires, exceptions=[], part2=False, form_sha256="0" * 64)


def _consent_story(kafka: KafkaConnection, topics: TopicNames) -> tuple[str, str]:
    """A revoked consent for one participant, a soon-expiring one for another."""
    now = datetime.now(UTC)
    revoked, expiring = new_participant_id(), new_participant_id()
    with PartnerPublisher("cedar-housing", kafka, catalog=CATALOG, topics=topics) as pub:
        for p in (revoked, expiring):
            pub.publish(make_event("HousingStatusChanged", p, START, status="TRANSITIONAL",
                               provider="Cedar Commons"))
    with PartnerPublisher("harbor-cm", kafka, catalog=CATALOG, topics=topics) as pub:
        pub.publish(_grant(revoked, "c-rev", START + timedelta(hours=1), now + timedelta(days=9)))
        pub.publish(_grant(expiring, "c-exp", START + timedelta(hours=1),
                           now + timedelta(seconds=8)))
        pub.publish(make_event("ConsentRevoked", revoked, START + timedelta(hours=2),
                           consent_id="c-rev"))
    return revoked, expiring


def _poison(kafka: KafkaConnection, topics: TopicNames) -> None:
    raw = KafkaProducer(**kafka.client_options())
    raw.send(topics.inbound("evergreen-pd"), key=participant_id("poison").encode(),
             value=b"\xc3\x01junk").get(30)
    raw.close()


def _cli_json(hub: Any, *args: str) -> tuple[int, Any, str]:
    done = hub.leadhub(*args, timeout=240)
    try:
        return done.returncode, json.loads(done.stdout), done.stderr
    except json.JSONDecodeError:
        return done.returncode, None, done.stdout + done.stderr


def test_replay_equals_the_live_view_after_a_messy_run(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, database_url: str
) -> None:
    hub.env["LEADHUB_DATABASE_URL"] = database_url
    for step in ("validator", "projector"):
        hub.start(step)
    site = load_site(Path(hub.env["LEADHUB_SITE_FILE"]))
    events = list(simulate(site, CATALOG, 30, 120, 7, START))
    _poison(kafka, topics)
    revoked, expiring = _consent_story(kafka, topics)

    def kill_projector() -> None:
        time.sleep(1.5)
        hub.kill("projector", signal.SIGKILL)
        hub.start("projector")

    killer = threading.Thread(target=kill_projector)
    killer.start()
    try:
        publish_by_source(events, lambda _partner: kafka, catalog=CATALOG, topics=topics, rate=150)
    finally:
        killer.join()

    live = ViewStore(database_url)
    live.create_schema()
    try:
        # the expiring consent's row is retracted by a clock tick once it has expired
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            gone = not live.rows_for("defender-assoc", expiring)
            if gone and live.rows_for("cedar-housing", expiring):
                break
            time.sleep(1.0)
        assert not live.rows_for("defender-assoc", expiring), "expiry was not applied"
        assert not live.rows_for("defender-assoc", revoked)

        code, compared, err = _cli_json(hub, "audit", "compare", "--json")
        assert code == 0, (compared, err, hub.log_tail("projector"))
        assert compared["match"] and compared["live_rows"] > len(events)
        assert compared["live"] == digest_rows(ordered_rows(live)).sha256 or (
            compared["attempts"] >= 1)

        code, replayed, err = _cli_json(hub, "audit", "replay", "--json")
        assert code == 0, err
        assert replayed["skipped_not_canonical"] == 0
        assert replayed["rows"] >= compared["live_rows"] - 5  # ticks may have moved on
    finally:
        live.close()


def test_replay_until_and_as_of_show_the_past(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, tmp_path: Path
) -> None:
    hub.start("validator")
    hub.start("projector")
    revoked, _ = _consent_story(kafka, topics)
    # wait until the revocation is in lead.events, then look back at two instants
    time.sleep(6)
    code, rows_now, err = _cli_json(hub, "audit", "as-of", "--at",
                                    datetime.now(UTC).isoformat(), "--as", "defender-assoc",
                                    "--participant", revoked, "--json")
    assert code == 0, err
    assert rows_now == []
    code, rows_before, err = _cli_json(hub, "audit", "as-of", "--at", "2020-01-01T00:00:00Z",
                                       "--as", "cedar-housing", "--json")
    assert code == 0, err
    assert rows_before == []
    out = tmp_path / "replay.sqlite"
    code, replayed, err = _cli_json(hub, "audit", "replay", "--out", str(out), "--json")
    assert code == 0, err
    store = ViewStore(f"sqlite:///{out}")
    try:
        assert digest_rows(ordered_rows(store)).sha256 == replayed["digest"]
        assert [r["type"] for r in store.rows_for("cedar-housing", revoked)] == [
            "HousingStatusChanged"]
    finally:
        store.close()


def _received(kafka: KafkaConnection, topics: TopicNames, events: list[Event],
              timeout_s: float = 90.0) -> datetime:
    """Wait until every one of ``events`` is in lead.events; return the latest received_at."""
    wanted = {e.event_id for e in events}
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, datetime] = {}
        with TopicReader(kafka, topics.events) as reader:
            for rec in reader.read(reader.end_offsets()):
                record = decode_canonical(rec.value)
                if record.kind == "EVENT":
                    event_id = decode(record.event, CATALOG, strict=False).event_id
                    if event_id in wanted:
                        found[event_id] = record.received_at
        if set(found) == wanted:
            return max(found.values())
        assert time.monotonic() < deadline, f"{len(wanted - set(found))} events never validated"
        time.sleep(0.5)


def test_as_of_by_receipt_and_by_occurrence_differ(
    hub: Any, topics: TopicNames, kafka: KafkaConnection
) -> None:
    """Reported out of order: a consent and a housing event that occurred on day 14 arrive
    first; a housing event of day 4 and the consent's revocation of day 9 arrive later. By
    receipt time, right after the first batch, the defender saw day 14's event; by occurrence
    time, on day 6 it would have seen day 4's, on day 16 nothing (revoked on day 9)."""
    hub.start("validator")
    participant = new_participant_id()
    base = (datetime.now(UTC) - timedelta(days=90)).replace(microsecond=0)
    day = timedelta(days=1)
    grant = _grant(participant, "c-occ", base, base + 365 * day)
    day4 = make_event("HousingStatusChanged", participant, base + 4 * day, status="TRANSITIONAL",
                  provider="Cedar Commons")
    revoke = make_event("ConsentRevoked", participant, base + 9 * day, consent_id="c-occ")
    day14 = make_event("HousingStatusChanged", participant, base + 14 * day, status="RENTAL",
                   provider=None)
    with PartnerPublisher("harbor-cm", kafka, catalog=CATALOG, topics=topics) as cm, \
            PartnerPublisher("cedar-housing", kafka, catalog=CATALOG,
                             topics=topics) as housing:
        cm.publish(grant)
        housing.publish(day14)
        received_first = _received(kafka, topics, [grant, day14])
        housing.publish(day4)
        cm.publish(revoke)
        _received(kafka, topics, [day4, revoke])

    def as_of(*when: str, only: bool = True) -> list[str]:
        code, rows, err = _cli_json(hub, "audit", "as-of", *when, "--as", "defender-assoc",
                                    *(("--participant", participant) if only else ()),
                                    "--json")
        assert code == 0, err
        return [row["event_id"] for row in rows]

    at_first = ("--at", received_first.isoformat())
    assert as_of(*at_first) == [day14.event_id]  # the revocation was not received yet
    assert as_of("--at", datetime.now(UTC).isoformat()) == []
    assert as_of("--occurred-by", (base + 6 * day).isoformat(), only=False) == [day4.event_id]
    assert as_of("--occurred-by", (base + 16 * day).isoformat()) == []  # revoked on day 9
    # what the hub knew right after the first batch about what had occurred by day 16
    assert as_of(*at_first, "--occurred-by", (base + 16 * day).isoformat()) == [day14.event_id]
    done = hub.leadhub("audit", "as-of", "--as", "defender-assoc")
    assert done.returncode == 2 and "--occurred-by" in done.stderr
