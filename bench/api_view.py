"""The staff API bench's synthetic view (``bench/api.py``, ``bench/console.py``): a PostgreSQL
database of generated events, loaded in bulk as the projector would store them (projection
version 9: each event's equal rows once in ``shared_rows``, naming their recipients; the
recipients, their participants and the indexed types' entries listed from them).
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, delete, inspect, text, update
from sqlalchemy.engine import make_url

from consumers.api.app import open_schema
from consumers.store import (
    LIST_INDEXED_ROWS,
    LIST_PARTICIPANTS,
    PROJECTION_VERSION,
    SHARED_ROW_COLUMNS,
    ViewStore,
    encode_row_json,
    indexed_rows,
    metadata,
    recipient_participants,
    view_meta,
)
from consumers.view_writer import variants_of

DATABASE = "leadhub_bench_api"
T0 = datetime(2024, 1, 1, tzinfo=UTC)

#: (type, categories, recipients besides the case manager, fields)
STORY: list[tuple[str, list[str], tuple[str, ...], dict[str, Any]]] = [
    ("ReferralMade", ["REFERRAL", "LEGAL_CASE"], ("evergreen-pd", "county-pao",
                                                  "lead-coordinator"),
     {"door": "ARREST_DIVERSION", "charges_held": True}),
    ("IntakeCompleted", ["PROGRAM_STATUS"], ("county-pao", "lead-coordinator"), {}),
    ("CaseManagerAssigned", ["PROGRAM_STATUS"], ("lead-coordinator",),
     {"case_manager": "R. Ortiz", "agency": "Harbor"}),
    ("ContactLogged", ["PROGRAM_STATUS"], ("evergreen-pd",),
     {"contact_method": "OUTREACH", "successful": True}),
    ("HousingStatusChanged", ["HOUSING"], ("cedar-housing",), {"status": "TRANSITIONAL"}),
    ("ServiceEncounter", ["PROGRAM_STATUS"], ("lead-coordinator",),
     {"service_type": "CASE_MANAGEMENT", "duration_minutes": 30}),
]


def person(index: int) -> str:
    """The bench's participant number ``index`` in the hub's format (``p-`` + 16 hex digits,
    in the order of ``index``)."""
    return f"p-{index:016x}"


def participants_for(rows: int) -> int:
    """About 40 rows per participant (20 events, about 2 recipients each)."""
    return max(10, rows // 40)


#: One synthetic event: participant, event id, type, instant, recipient to the row's JSON.
SyntheticEvent = tuple[str, str, str, datetime, dict[str, str]]


def generate(rows: int, seed: int) -> Iterator[SyntheticEvent]:
    """Yield synthetic events until they give ``rows`` view rows (one per recipient and event;
    the last event may lose recipients to make the count)."""
    rng = random.Random(seed)
    produced = 0
    people = participants_for(rows)
    while True:
        for index in range(people):
            participant = person(index)
            start = T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 600))
            for step in range(20):
                kind, categories, extra, fields = STORY[0] if step == 0 else (
                    STORY[1] if step == 1 else STORY[2 + rng.randrange(len(STORY) - 2)])
                at = start + timedelta(hours=step * rng.randrange(1, 72))
                event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                row = encode_row_json({
                    "event_id": event_id, "type": kind, "participant_id": participant,
                    "occurred_at": at.isoformat().replace("+00:00", "Z"),
                    "source_partner": "harbor-cm", "fields": fields, "categories": categories,
                    "consent_ids": [], "notice": None})
                texts: dict[str, str] = {}
                for recipient in ("harbor-cm", *extra[: rng.randrange(0, len(extra) + 1)]):
                    texts[recipient] = row
                    produced += 1
                    if produced >= rows:
                        yield participant, event_id, kind, at, texts
                        return
                yield participant, event_id, kind, at, texts


def shared_row_values(events: Iterable[SyntheticEvent],
                      recipients: set[str]) -> Iterator[tuple[Any, ...]]:
    """COPY tuples of ``shared_rows`` (``SHARED_ROW_COLUMNS``' order) of ``events``: each event's
    equal rows once, naming their recipients, numbered as the hub numbers an event's variants
    (``consumers.view_writer.variants_of``). Adds every recipient
    to ``recipients``."""
    for participant, event_id, kind, at, texts in events:
        recipients.update(texts)
        for number, (names, row) in enumerate(variants_of(texts)):
            yield participant, event_id, number, names, kind, at, "harbor-cm", row


def loaded_rows(url: str) -> int | None:
    """The view rows of the bench database at ``url`` (rows per recipient, through the
    ``view_rows`` SQL view); None if it does not store shared rows (an older layout)."""
    engine = create_engine(url)
    try:
        if "view_rows" not in inspect(engine).get_view_names():
            return None
        with engine.connect() as check:
            return int(check.execute(text("SELECT count(*) FROM view_rows")).scalar_one())
    finally:
        engine.dispose()


def prepare_database(server_url: str, rows: int, reuse: bool, database: str = DATABASE) -> str:
    """Create and load the bench database ``database`` (unless ``reuse`` and it is loaded);
    return its URL. bench/console.py loads its own with a name of its own."""
    url = make_url(server_url).set(database=database).render_as_string(hide_password=False)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                    {"d": database}).scalar()
        if exists and reuse:
            count = loaded_rows(url)
            if count == rows:
                admin.dispose()
                mark_current_projection(url)
                print(f"reusing {database} with {count} rows", file=sys.stderr)
                return url
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    store = ViewStore(url)
    store.create_schema()
    started = time.monotonic()
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        recipients: set[str] = set()
        shared = 0
        with cursor.copy(f"COPY shared_rows ({', '.join(SHARED_ROW_COLUMNS)}) FROM STDIN") as copy:
            for values in shared_row_values(generate(rows, seed=6), recipients):
                copy.write_row(values)
                shared += 1
        cursor.executemany("INSERT INTO view_recipients (recipient) VALUES (%s)",
                           [(recipient,) for recipient in sorted(recipients)])
        cursor.execute(LIST_PARTICIPANTS)
        cursor.execute(LIST_INDEXED_ROWS)
        raw.commit()
    finally:
        raw.close()
    open_schema(store.engine)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE shared_rows, view_recipients, indexed_rows, "
                                "recipient_participants"))
    store.close()
    print(f"loaded {rows} view rows as {shared} shared rows in "
          f"{time.monotonic() - started:.0f}s", file=sys.stderr)
    return url


def mark_current_projection(url: str) -> None:
    """Label the reused synthetic view with this code's projection version, listing each
    recipient's participants (``recipient_participants``) and indexed types' rows
    (``indexed_rows``) again.

    Its rows are generated here, not projected, so no projection version made them; without
    this, a version bump elsewhere would make the API refuse the bench database.
    """
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(delete(recipient_participants))
        connection.execute(text(LIST_PARTICIPANTS))
        connection.execute(delete(indexed_rows))
        connection.execute(text(LIST_INDEXED_ROWS))
        connection.execute(update(view_meta).where(view_meta.c.key == "projection_version")
                           .values(value=PROJECTION_VERSION))
    engine.dispose()
