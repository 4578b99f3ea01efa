"""The projector's participant states: a bounded cache over SQL, and one batch's view of them.

A batch (:class:`BatchStates`) reads the participants its records name from the cache, or from
SQL inside the batch's transaction. From SQL it reads only their heads and the events whose ids
the batch projects (:meth:`ProjectionStore.load_heads`), unless a record will need a whole
history anyway; the projection step asks for the rest of a state when it needs it
(:meth:`BatchStates.complete`). So reading a participant back costs the same whatever its
history, except for the steps that re-project it (a consent change, a deadline).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from sqlalchemy import Connection

from consumers.errors import ConsumerError
from consumers.projection_store import ProjectionStore, StoredParticipant
from processors.state import ParticipantState, with_history

#: Participants whose states are read back from SQL at a time. The cache makes room for each
#: chunk as it is read, so the states a batch reads back never sit beside a full cache: at most
#: one chunk does. Read back all at once, a batch's whole read-back did, and that grew with the
#: participants' histories: at 20,000 participants the second half of a year peaked at 462 MiB
#: that way, 387 MiB in chunks (BENCHMARKS.md "Projector at scale").
READ_BACK_CHUNK = 100
#: Where a batch found a participant's state (``leadhub_state_reads_total{source}``).
STATE_READ_SOURCES = ("cache", "head", "whole")
#: What a state's head (its consents, deadlines, the objects around them) counts against the
#: cache's capacity, in events or rows: a head read back alone held 3.2 KiB on average, an
#: event or a row about 145 bytes (``bench/state_memory.py --heads``, 1,000 participant-years).
#: Counted as one, a cache of head-only states held far more participants than its capacity
#: meant (a full-size run's projector passed 460 MiB early in the year, decision 0007).
HEAD_WEIGHT = 24


def state_weight(stored: StoredParticipant) -> int:
    """What a state counts against the cache's capacity: its head, its events and its rows
    (what its memory grows with)."""
    state = stored.state
    return HEAD_WEIGHT + len(state.events) + sum(len(rows) for rows in state.rows.values())


class StateCache:
    """Committed participant states by id, least recently used dropped past ``capacity``.

    The capacity counts a state's head, events and rows (:func:`state_weight`: what its memory
    grows with), so the cache's memory is bounded whatever the participants' histories: a few
    long-time participants take the room of many new ones.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.weight = 0
        self._items: OrderedDict[str, tuple[int, StoredParticipant, int]] = OrderedDict()

    def get(self, participant_id: str) -> StoredParticipant | None:
        found = self._items.get(participant_id)
        if found is None:
            return None
        self._items.move_to_end(participant_id)
        return found[1]

    def put(self, participant_id: str, partition: int, stored: StoredParticipant) -> None:
        self._drop(participant_id)
        weight = state_weight(stored)
        self._items[participant_id] = (partition, stored, weight)
        self.weight += weight
        while self.weight > self.capacity and len(self._items) > 1:
            self._drop(next(iter(self._items)))

    def make_room(self, weight: int) -> None:
        """Drop least recently used states until ``weight`` more fits: a batch that reads states
        back from SQL holds them beside the cache until it commits, and the process's memory
        is bounded by the capacity, not by the capacity plus a batch."""
        while self._items and self.weight + weight > self.capacity:
            self._drop(next(iter(self._items)))

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the participants of ``partitions`` (another instance may change them)."""
        gone = set(partitions)
        for pid in [pid for pid, (p, _, _) in self._items.items() if p in gone]:
            self._drop(pid)

    def _drop(self, participant_id: str) -> None:
        found = self._items.pop(participant_id, None)
        if found is not None:
            self.weight -= found[2]

    def __len__(self) -> int:
        return len(self._items)


class BatchStates:
    """The :class:`~processors.projection_step.StateSource` of one batch: the batch's new
    states over the cache over SQL (read on ``connection``, inside the batch's transaction)."""

    def __init__(self, store: ProjectionStore, connection: Connection, cache: StateCache) -> None:
        self.sql = store
        self.connection = connection
        self.cache = cache
        self.before: dict[str, StoredParticipant | None] = {}
        self.after: dict[str, tuple[int, ParticipantState, int | None]] = {}
        #: The weight of the states this batch read back from SQL (held beside the cache).
        self.read_back = 0
        #: Participants this batch read, by where from: the cache, SQL by the head, SQL whole.
        self.reads = dict.fromkeys(STATE_READ_SOURCES, 0)

    def prefetch(self, participant_ids: Iterable[str]) -> None:
        """Load the whole states of those participants not known yet (or known by their heads
        only), :data:`READ_BACK_CHUNK` per round trip, the cache making room for all this batch
        has read back before the next."""
        missing = []
        for pid in dict.fromkeys(participant_ids):
            if pid in self.before:
                known = self.before[pid]
                if known is None or known.state.complete:
                    continue
            else:
                cached = self.cache.get(pid)
                if cached is not None and cached.state.complete:
                    self.before[pid] = cached
                    self.reads["cache"] += 1
                    continue
            missing.append(pid)
        for start in range(0, len(missing), READ_BACK_CHUNK):
            chunk = missing[start:start + READ_BACK_CHUNK]
            self._read_back(chunk, self.sql.load(self.connection, chunk), "whole")

    def prefetch_heads(self, wanted: Mapping[str, Collection[str]]) -> None:
        """Know each participant of ``wanted`` not known yet, holding at least the events whose
        ids ``wanted`` lists for it (found or not): from the cache, else its head from SQL."""
        missing: dict[str, Collection[str]] = {}
        lookups: dict[str, list[str]] = {}
        for pid, event_ids in wanted.items():
            if pid in self.before:
                continue
            cached = self.cache.get(pid)
            if cached is None:
                missing[pid] = event_ids
                continue
            self.before[pid] = cached
            self.reads["cache"] += 1
            unknown = [e for e in event_ids if e not in cached.state.events]
            if unknown and not cached.state.complete:
                lookups[pid] = unknown
        for pid, found in self.sql.held_events(self.connection, lookups).items():
            stored = self.before[pid]
            assert stored is not None
            events = stored.state.events.update({event.event_id: event for event in found})
            self.before[pid] = StoredParticipant(replace(stored.state, events=events),
                                                 stored.next_seq)
        pids = list(missing)
        for start in range(0, len(pids), READ_BACK_CHUNK):
            chunk = {pid: missing[pid] for pid in pids[start:start + READ_BACK_CHUNK]}
            self._read_back(list(chunk), self.sql.load_heads(self.connection, chunk), "head")

    def _read_back(self, chunk: list[str], loaded: dict[str, StoredParticipant],
                   source: str) -> None:
        self.reads[source] += len(loaded)
        self.read_back += sum(state_weight(stored) for stored in loaded.values())
        self.cache.make_room(self.read_back)
        for pid in chunk:
            self.before[pid] = loaded.get(pid)

    def state(self, participant_id: str) -> ParticipantState | None:
        if participant_id in self.after:
            return self.after[participant_id][1]
        if participant_id not in self.before:
            self.prefetch([participant_id])  # not announced: whole, so no event_id is unknown
        stored = self.before[participant_id]
        return stored.state if stored is not None else None

    def complete(self, participant_id: str) -> ParticipantState:
        """The participant's current state, whole: read back from SQL if only its head was,
        with what this batch has added to it meanwhile."""
        self.prefetch([participant_id])
        stored = self.before.get(participant_id)
        if stored is None:
            raise ConsumerError(f"project: participant {participant_id} has no stored state")
        if participant_id not in self.after:
            return stored.state
        partition, current, next_due = self.after[participant_id]
        whole = with_history(current, stored.state)
        self.after[participant_id] = (partition, whole, next_due)
        return whole

    def due(self, partition: int, now_us: int) -> list[str]:
        due = [pid for pid, (p, _, next_due) in self.after.items()
               if p == partition and next_due is not None and next_due <= now_us]
        committed = [pid for pid in self.sql.due(self.connection, partition, now_us)
                     if pid not in self.after]
        self.prefetch(committed)  # a tick that changes anything re-projects or derives
        return due + committed

    def store(self, participant_id: str, partition: int, state: ParticipantState,
              next_due_us: int | None) -> None:
        if participant_id not in self.before:
            self.prefetch([participant_id])
        self.after[participant_id] = (partition, state, next_due_us)

