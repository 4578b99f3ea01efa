"""The faust-streaming adapter: the ``validate`` and ``project`` steps on real Kafka.

``validate`` reads every partner's inbound topic and writes ``lead.events`` or ``lead.dlq``
(:mod:`processors.validate` decides); an event_id it has already accepted for that participant
is dropped. ``project`` reads ``lead.events``, keeps each participant's state in a
changelog-backed table, runs the pure core and writes ``lead.view.changes``. A leader timer
writes CLOCK records to every partition of ``lead.events``; on each, the projector ticks that
partition's participants whose next timer is due, so expiry and deadlines flow through the log
and replay exactly.

Speed: a participant's view changes from one batch travel as one message; every output of a
batch is handed to the producer before any acknowledgement is awaited; decoded states stay in
a :class:`~processors.state_cache.StateCache` beside the table, so JSON is parsed only after
a restart or rebalance.

Crash safety (at-least-once, no loss): both steps work in small batches and, for each batch,
(1) send every output and wait until Kafka has acknowledged all of them, then (2) write the
table, then (3) let faust commit the input offsets (faust flushes the producer first). A crash
before (2) re-reads the batch and re-sends the same outputs (the sink's upserts are idempotent);
a crash after (2) finds the work recorded and sends nothing new — but its outputs were already
durable.

Co-partitioning: table keys are the participant id's raw bytes, exactly the input topics' key,
so a state's changelog partition is its participant's input partition (``use_partitioner``);
faust gives a worker the changelog partitions of the input partitions it owns, so a worker
always holds the states of the participants it is sent. (Until state layout 2 the keys went
through faust's JSON key codec, hashed to other partitions, and a second worker, or a dead
one still in the group, left participants without their state.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
import mode
import orjson

from processors.projector import Projector
from processors.site import SitePolicy
from processors.state import ParticipantState
from processors.state_cache import StateCache
from processors.validate import Accepted, DeadLetter, validate_inbound
from processors.view import ViewChange
from schemas.canonical import CanonicalRecord, decode_canonical, encode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.errors import HubError
from schemas.topics import TopicNames

log = logging.getLogger("leadhub.processors")

Clock = Callable[[], datetime]
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.1
#: The tables' layout; the projector's consumer group names it, so a new layout re-projects
#: ``lead.events`` from the start into fresh tables (the same rows again: upserts are idempotent).
STATE_LAYOUT = 2


def app_id(topic_prefix: str, step: str) -> str:
    """The faust app id, hence consumer group and changelog prefix, of ``validator|projector``."""
    if step == "projector":
        return f"{topic_prefix}leadhub-projector-s{STATE_LAYOUT}"
    return f"{topic_prefix}leadhub-{step}"


def utc_now() -> datetime:
    """The adapter's clock (the core never reads one)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None


def encode_changes(participant_id: str, changes: Sequence[ViewChange]) -> Outgoing:
    """The ``lead.view.changes`` message for one participant's changes from one batch.

    Keyed by participant id, so a participant's changes stay in order on one partition; the
    sink applies ``changes`` in list order.
    """
    body = {
        "participant_id": participant_id,
        "changes": [
            {
                "kind": change.kind,
                "recipient": change.recipient,
                "event_id": change.event_id,
                "row": change.row.to_json() if change.row is not None else None,
            }
            for change in changes
        ],
    }
    return Outgoing(
        key=participant_id.encode(),
        value=orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
    )


async def send_and_confirm(producer: Any, topic: str, messages: Sequence[Outgoing]) -> None:
    """Produce ``messages`` in order and return once Kafka has acknowledged every one.

    Every message is handed to the producer before any acknowledgement is awaited, so they
    travel in as few produce requests as the producer's batching allows.
    """
    futures = [
        await producer.send(topic, m.key, m.value, m.partition, None, list(m.headers) or None)
        for m in messages
    ]
    if futures:
        await asyncio.gather(*futures)


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
    datadir: str | None = None,
    tick_interval_s: float = 5.0,
    clock: Clock = utc_now,
) -> faust.App:
    """Build the faust app running ``steps`` (a subset of {"validate", "project"}).

    ``datadir`` is faust's working directory for the app (default: faust's, under the
    current directory).
    """
    options: dict[str, Any] = {"datadir": datadir} if datadir else {}
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store=store,
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # The changelog carries whole participant states: LZ4 makes them several times smaller.
        producer_compression_type="lz4",
        broker_commit_every=BATCH_MAX,
        broker_commit_interval=0.5,
        table_cleanup_interval=3600.0,
        # An unexpected error stops the worker instead of restarting the agent past the
        # message: the process restarts from its committed offsets and nothing is skipped.
        agent_supervisor=mode.CrashingSupervisor,
        **options,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(topics.events, partitions=partitions, **raw)

    if "validate" in steps:
        inbound = app.topic(
            *[topics.inbound(p) for p in site.partner_ids()], partitions=partitions, **raw
        )
        # Renamed with layout 2: the old changelog's keys are of the old codec.
        accepted_ids = app.Table("accepted-event-ids-s2", default=None, partitions=partitions,
                                 key_type=bytes, use_partitioner=True)

        @app.agent(inbound, name="validate")
        async def validate(stream: Any) -> AsyncIterator[None]:
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
                await _validate_batch(batch, accepted_ids, app.producer,
                                      topics=topics, site=site, catalog=catalog, now=clock())
                yield None

    if "project" in steps:
        projector = Projector(site, catalog)
        participants = app.Table("participants", default=None, partitions=partitions,
                                 key_type=bytes, use_partitioner=True)
        cache = StateCache()

        @app.agent(events_topic, name="project")
        async def project(stream: Any) -> AsyncIterator[None]:
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
                await _project_batch(batch, participants, cache, projector, catalog,
                                     app.producer, topics)
                yield None

        @app.timer(interval=tick_interval_s, on_leader=True)  # type: ignore[untyped-decorator]
        async def clock_tick() -> None:
            tick = encode_canonical(CanonicalRecord(
                kind="CLOCK", received_at=clock(), source_partner="hub",
                ingest_topic="", ingest_partition=-1, ingest_offset=-1, event=b"",
            ))
            await send_and_confirm(
                app.producer, topics.events,
                [Outgoing(None, tick, partition=p) for p in range(partitions)])

    return app


async def _validate_batch(batch: Sequence[Any], accepted_ids: Any, producer: Any, *,
                          topics: TopicNames, site: SitePolicy, catalog: Catalog,
                          now: datetime) -> None:
    """Validate a batch; confirm its outputs, then record the accepted event ids."""
    accepted: list[Outgoing] = []
    dead: list[Outgoing] = []
    seen: dict[str, list[str]] = {}
    for event in batch:
        message = event.message
        outcome = validate_inbound(
            topic=message.topic, partition=message.partition, offset=message.offset,
            key=event.key, value=event.value, received_at=now,
            topics=topics, site=site, catalog=catalog,
        )
        if isinstance(outcome, DeadLetter):
            log.warning("validate: dead letter from %s[%d]@%d: %s",
                        message.topic, message.partition, message.offset, outcome.reason)
            dead.append(Outgoing(outcome.key, outcome.value, outcome.headers))
            continue
        assert isinstance(outcome, Accepted)
        ids = seen.get(outcome.participant_id)
        if ids is None:
            ids = list(accepted_ids.get(outcome.key) or [])
            seen[outcome.participant_id] = ids
        if outcome.event_id in ids:
            log.info("validate: dropped repeated event %s", outcome.event_id)
            continue
        ids.append(outcome.event_id)
        accepted.append(Outgoing(outcome.key, outcome.value))
    await send_and_confirm(producer, topics.events, accepted)
    await send_and_confirm(producer, topics.dlq, dead)
    for participant_id, ids in seen.items():
        accepted_ids[participant_id.encode()] = ids


async def _project_batch(batch: Sequence[Any], participants: Any, cache: StateCache,
                         projector: Projector, catalog: Catalog, producer: Any,
                         topics: TopicNames) -> None:
    """Project a batch; confirm its view changes, then store the participants' states.

    A CLOCK record on partition *p* ticks exactly the participants of *p* whose next timer is
    due at its instant, as the audit replay does, so the view never depends on where batch
    boundaries fall.
    """
    states: dict[str, tuple[int, ParticipantState]] = {}
    changes: dict[str, list[ViewChange]] = {}
    dead: list[Outgoing] = []

    def state_of(participant_id: str) -> ParticipantState | None:
        if participant_id in states:
            return states[participant_id][1]
        stored = participants.get(participant_id.encode())
        return cache.state(participant_id, stored["state"] if stored else None)

    for event in batch:
        message = event.message
        try:
            record = decode_canonical(event.value)
        except HubError as exc:
            dead.append(Outgoing(topics.events.encode(), event.value,
                                 _dead_letter_headers("project", message, exc)))
            continue
        if record.kind == "CLOCK":
            now = record.received_at
            for participant_id, state in _due_states(participants, states, cache, projector,
                                                     message.partition, now):
                new_state, ticked = projector.tick(state, now)
                states[participant_id] = (message.partition, new_state)
                changes.setdefault(participant_id, []).extend(ticked)
            continue
        hub_event = decode(record.event, catalog)
        new_state, projected = projector.project(state_of(hub_event.participant_id), hub_event,
                                                 record.received_at)
        states[hub_event.participant_id] = (message.partition, new_state)
        changes.setdefault(hub_event.participant_id, []).extend(projected)
    await send_and_confirm(producer, topics.view_changes,
                           [encode_changes(pid, c) for pid, c in changes.items() if c])
    await send_and_confirm(producer, topics.dlq, dead)
    for participant_id, (partition, state) in states.items():
        due = projector.next_due(state)
        participants[participant_id.encode()] = {
            "partition": partition,
            "next_due": due.isoformat() if due else None,
            "state": cache.encode(state),
        }


def _due_states(participants: Any, batch_states: dict[str, tuple[int, ParticipantState]],
                cache: StateCache, projector: Projector, partition: int,
                now: datetime) -> list[tuple[str, ParticipantState]]:
    """The participants of ``partition`` with a timer due at ``now``, with their states.

    Participants already changed in this batch are judged by their new state, the others by
    the next-due instant stored with them in the table.
    """
    due: list[tuple[str, ParticipantState]] = []
    for participant_id, (state_partition, state) in batch_states.items():
        next_due = projector.next_due(state)
        if state_partition == partition and next_due is not None and next_due <= now:
            due.append((participant_id, state))
    for key, stored in participants.items():
        participant_id = key.decode()
        if participant_id in batch_states or not _stored_due(stored, partition, now):
            continue
        stored_state = cache.state(participant_id, stored["state"])
        assert stored_state is not None
        due.append((participant_id, stored_state))
    return due


def _stored_due(stored: Any, partition: int, now: datetime) -> bool:
    """True if a stored participant of ``partition`` has a timer due at ``now``."""
    if not stored or stored.get("partition") != partition or stored.get("next_due") is None:
        return False
    return datetime.fromisoformat(stored["next_due"]) <= now


def _dead_letter_headers(step: str, message: Any, exc: HubError) -> tuple[tuple[str, bytes], ...]:
    return (
        ("lead.step", step.encode()),
        ("lead.reason", b"NOT_CANONICAL"),
        ("lead.message", str(exc).encode()),
        ("lead.source.topic", message.topic.encode()),
        ("lead.source.partition", str(message.partition).encode()),
        ("lead.source.offset", str(message.offset).encode()),
    )
