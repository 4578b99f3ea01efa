"""The simulator: deterministic, ordered, realistic proportions, every event encodes."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leadhub.cli import main
from processors.offline import project_events, rows_for
from processors.projector import Projector
from processors.site import load_site
from producers.simulator import SimulationError, simulate
from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import Event, event_to_json
from tests.factories import SITE_FILE

EXAMPLE = SITE_FILE
SITE = load_site(EXAMPLE)
CATALOG = load_catalog()
START = datetime(2025, 1, 1, tzinfo=UTC)


def run(participants: int = 300, days: int = 200, seed: int = 11) -> list[Event]:
    return list(simulate(SITE, CATALOG, participants, days, seed, START))


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = [event_to_json(e) for e in run(seed=5)]
    assert first == [event_to_json(e) for e in run(seed=5)]
    assert first != [event_to_json(e) for e in run(seed=6)]


def test_events_are_in_time_order_inside_the_period_with_unique_ids() -> None:
    events = run()
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + timedelta(days=200)
    assert len({e.event_id for e in events}) == len(events)


def test_every_event_encodes_and_its_source_may_emit_it() -> None:
    for event in run(participants=200, days=365, seed=2):
        partner = SITE.partner(event.source_partner)
        assert partner is not None
        assert CATALOG.may_emit(partner.role, event.type), (partner.role, event.type)
        assert decode(encode(event, CATALOG), CATALOG) == event


def test_realistic_proportions() -> None:
    events = run(participants=2000, days=365, seed=3)
    referrals = [e for e in events if e.type == "ReferralMade"]
    assert len(referrals) == 2000
    doors = Counter(e.payload["door"] for e in referrals)
    assert 0.45 < doors["ARREST_DIVERSION"] / 2000 < 0.55
    assert 0.30 < doors["SOCIAL_CONTACT"] / 2000 < 0.40
    assert 0.11 < doors["COMMUNITY"] / 2000 < 0.19
    types = Counter(e.type for e in events)
    assert 0.5 < types["IntakeCompleted"] / 2000 < 0.8  # some never complete intake
    for needed in ("ConsentRevoked", "ChargesFiled", "ChargesDeclined", "CourtDateSet",
                   "DefenderAssigned", "IdentifierLinked", "HousingStatusChanged",
                   "ParticipantExited"):
        assert types[needed] > 0, needed
    providers = Counter(e.source_partner for e in events if e.type == "ServiceEncounter")
    assert providers["riverbend-sud"] > 0 and providers["northside-mh"] > 0
    phones = {e.payload["phone"] for e in events if e.type == "IntakeCompleted"}
    assert all(phone.startswith("555-01") for phone in phones)


def test_some_intakes_miss_the_deadline_and_the_projector_notices() -> None:
    events = run(participants=400, days=200, seed=4)
    view = project_events(events, Projector(SITE, CATALOG), recipient="county-pao")
    types = Counter(row.type for row in rows_for(view, "county-pao"))
    assert types["IntakeDeadlineMissed"] > 0
    assert "ServiceEncounter" in types  # non-health encounters, as PROGRAM_STATUS
    for row in rows_for(view, "county-pao"):
        assert not {"SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"} & set(row.categories)


def test_streams_without_building_the_whole_history() -> None:
    stream = simulate(SITE, CATALOG, 100_000, 365, 1, START)
    head = list(itertools.islice(stream, 2000))
    assert len(head) == 2000


def test_bad_arguments_are_simulation_errors() -> None:
    with pytest.raises(SimulationError):
        list(simulate(SITE, CATALOG, 10, 0, 1, START))
    with pytest.raises(SimulationError):
        list(simulate(SITE, CATALOG, 10, 10, 1, datetime(2025, 1, 1)))


def test_cli_simulate_then_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["simulate", "--site", str(EXAMPLE), "--participants", "40", "--days", "90",
                 "--seed", "9", "--out", str(out), "--start", "2025-02-01T00:00:00Z"]) == 0
    capsys.readouterr()
    assert main(["project", "--site", str(EXAMPLE), "--events", str(out), "--as",
                 "evergreen-pd", "--at", "2025-03-15T00:00:00Z", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows, "the police see their own referrals at least"
    keys = [(row["occurred_at"], row["event_id"]) for row in rows]
    assert keys == sorted(keys)
    assert all(row["occurred_at"] <= "2025-03-15T00:00:00Z" for row in rows)
    assert set(rows[0]) == {"event_id", "type", "participant_id", "occurred_at",
                            "source_partner", "fields", "categories", "consent_ids", "notice"}
    assert main(["project", "--site", str(EXAMPLE), "--events", str(out), "--as", "nobody"]) == 2
