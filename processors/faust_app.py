"""The faust-streaming adapter: the ``validate`` and ``project`` steps on real Kafka.

``validate`` reads every partner's inbound topic and writes ``lead.events`` or ``lead.dlq``
(:mod:`processors.validate` decides); an event_id it has already accepted for that participant
is dropped. ``project`` reads ``lead.events``, keeps each
participant's state in a changelog-backed table, runs the pure core and writes
``lead.view.changes``. A leader timer writes CLOCK records to every partition of
``lead.events``; on each the projector ticks that partition's participants, so expiry and
deadlines flow through the log and replay exactly.

At-least-once: faust commits an input offset only after the messages sent while handling it
are acknowledged; redelivered input is harmless because the core ignores a repeated event_id
and the sink's upserts are idempotent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import faust
import mode

from processors.projector import Projector
from processors.state import ParticipantState
from processors.view import ViewChange
from processors.site import SitePolicy
from processors.validate import Accepted, validate_inbound
from schemas.canonical import CanonicalRecord, decode_canonical, encode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.errors import HubError
from schemas.topics import TopicNames

log = logging.getLogger("leadhub.processors")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The adapter's clock (the core never reads one)."""
    return datetime.now(UTC)


def encode_change(change: ViewChange) -> tuple[bytes, bytes]:
    """Key and value of a ``lead.view.changes`` message for ``change``."""
    body = {
        "kind": change.kind,
        "recipient": change.recipient,
        "participant_id": change.participant_id,
        "event_id": change.event_id,
        "row": change.row.to_json() if change.row is not None else None,
    }
    key = f"{change.recipient}|{change.event_id}".encode()
    return key, json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def create_app(
    *,
    app_id: str,
    bootstrap: str,
    topics: TopicNames,
    site: SitePolicy,
    catalog: Catalog,
    partitions: int,
    steps: frozenset[str] = frozenset({"validate", "project"}),
    store: str = "memory://",
    tick_interval_s: float = 5.0,
    clock: Clock = utc_now,
) -> faust.App:
    """Build the faust app running ``steps`` (a subset of {"validate", "project"})."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store=store,
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=500,
        broker_commit_interval=0.5,
        table_cleanup_interval=3600.0,
        # An unexpected error stops the worker instead of restarting the agent past the
        # message: the process restarts from its committed offsets and nothing is skipped.
        agent_supervisor=mode.CrashingSupervisor,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(topics.events, partitions=partitions, **raw)
    dlq_topic = app.topic(topics.dlq, partitions=partitions, **raw)
    changes_topic = app.topic(topics.view_changes, partitions=partitions, **raw)

    if "validate" in steps:
        inbound = app.topic(
            *[topics.inbound(p) for p in site.partner_ids()], partitions=partitions, **raw
        )

        # event_ids already accepted, per participant (the key of every inbound topic).
        accepted_ids = app.Table("accepted-event-ids", default=None, partitions=partitions,
                                 key_type=str, value_type=list)

        @app.agent(inbound, name="validate")
        async def validate(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for event in stream.events():
                message = event.message
                outcome = validate_inbound(
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=event.key,
                    value=event.value,
                    received_at=clock(),
                    topics=topics,
                    site=site,
                    catalog=catalog,
                )
                if isinstance(outcome, Accepted):
                    seen = accepted_ids.get(outcome.participant_id) or []
                    if outcome.event_id in seen:
                        log.info("validate: dropped repeated event %s", outcome.event_id)
                        yield None
                        continue
                    await events_topic.send(key=outcome.key, value=outcome.value)
                    accepted_ids[outcome.participant_id] = [*seen, outcome.event_id]
                else:
                    log.warning(
                        "validate: dead letter from %s[%d]@%d: %s",
                        message.topic, message.partition, message.offset, outcome.reason,
                    )
                    await dlq_topic.send(
                        key=outcome.key, value=outcome.value, headers=list(outcome.headers)
                    )
                yield None

    if "project" in steps:
        projector = Projector(site, catalog)
        table = app.Table(
            "participants", default=None, partitions=partitions,
            key_type=str, value_type=dict,
        )

        async def emit(changes: list[ViewChange]) -> None:
            for change in changes:
                key, value = encode_change(change)
                await changes_topic.send(key=key, value=value)

        @app.agent(events_topic, name="project")
        async def project(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for event in stream.events():
                partition = event.message.partition
                try:
                    record = decode_canonical(event.value)
                except HubError as exc:
                    await dlq_topic.send(key=topics.events.encode(), value=event.value,
                                         headers=_dead_letter_headers("project", event, exc))
                    yield None
                    continue
                if record.kind == "CLOCK":
                    await _tick_partition(table, projector, partition, record.received_at, emit)
                else:
                    hub_event = decode(record.event, catalog)
                    stored = table.get(hub_event.participant_id)
                    state = ParticipantState.from_json(stored["state"]) if stored else None
                    new_state, changes = projector.project(state, hub_event, record.received_at)
                    table[hub_event.participant_id] = _stored(projector, new_state, partition)
                    await emit(changes)
                yield None

        @app.timer(interval=tick_interval_s, on_leader=True)
        async def clock_tick() -> None:
            now = clock()
            tick = encode_canonical(CanonicalRecord(
                kind="CLOCK", received_at=now, source_partner="hub",
                ingest_topic="", ingest_partition=-1, ingest_offset=-1, event=b"",
            ))
            for partition in range(partitions):
                await events_topic.send(key=None, value=tick, partition=partition)

    return app


def _dead_letter_headers(step: str, event: Any, exc: HubError) -> list[tuple[str, bytes]]:
    message = event.message
    return [
        ("lead.step", step.encode()),
        ("lead.reason", b"NOT_CANONICAL"),
        ("lead.message", str(exc).encode()),
        ("lead.source.topic", message.topic.encode()),
        ("lead.source.partition", str(message.partition).encode()),
        ("lead.source.offset", str(message.offset).encode()),
    ]


def _stored(projector: Projector, state: ParticipantState, partition: int) -> dict[str, Any]:
    """The table value: the state, its partition, and when it next needs a tick (or None)."""
    due = projector.next_due(state)
    return {"partition": partition, "next_due": due.isoformat() if due else None,
            "state": state.to_json()}


async def _tick_partition(
    table: Any,
    projector: Projector,
    partition: int,
    now: datetime,
    emit: Callable[[list[ViewChange]], Any],
) -> None:
    """Apply ``tick`` at ``now`` to every participant of ``partition`` with something due.

    Only this partition's participants are touched, so table writes go to the changelog
    partition they belong to.
    """
    due: list[tuple[str, ParticipantState]] = []
    for participant_id, stored in list(table.items()):
        if not stored or stored.get("partition") != partition or stored.get("next_due") is None:
            continue
        if datetime.fromisoformat(stored["next_due"]) <= now:
            due.append((participant_id, ParticipantState.from_json(stored["state"])))
    for participant_id, state in due:
        new_state, changes = projector.tick(state, now)
        table[participant_id] = _stored(projector, new_state, partition)
        await emit(changes)
