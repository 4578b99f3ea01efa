"""Benchmark: events/s through the pure policy core on a simulated 8-partner LEAD site.

Simulates the history first (not timed), then projects every event with now = its occurred_at
through one Projector on one core, keeping one state per participant as the streaming layer
does, and finally ticks every participant to the end. Prints the figures and writes the
"Policy core (issue 4)" section of BENCHMARKS.md (other sections are left alone).

    .venv/bin/python bench/project.py [--participants 2000] [--days 365] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from processors.projector import ParticipantState, Projector
from processors.site import load_site
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.event import Event

# isort: split
# A sibling in bench/: run as a file, the script's folder is first on sys.path.
from machine import cpu_model, python_version

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Policy core (issue 4)"


def project_all(projector: Projector, events: list[Event], end: datetime) -> tuple[int, int]:
    """Project every event, tick everyone at ``end``; return (changes, participants)."""
    states: dict[str, ParticipantState] = {}
    changes = 0
    for event in events:
        state, new = projector.project(states.get(event.participant_id), event, event.occurred_at)
        states[event.participant_id] = state
        changes += len(new)
    for participant_id, state in states.items():
        states[participant_id], new = projector.tick(state, end)
        changes += len(new)
    return changes, len(states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()

    site = load_site(ROOT / "config" / "site.example.yaml")
    catalog = load_catalog()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events = list(simulate(site, catalog, args.participants, args.days, args.seed, start))
    end = events[-1].occurred_at
    consent_events = sum(1 for e in events if e.type.startswith("Consent"))

    timings = []
    for _ in range(args.runs):
        began = time.perf_counter()
        changes, _ = project_all(Projector(site, catalog), events, end)
        timings.append(time.perf_counter() - began)
    best = min(timings)
    rate = len(events) / best

    tracemalloc.start()
    states: dict[str, ParticipantState] = {}
    projector = Projector(site, catalog)
    for event in events:
        states[event.participant_id], _ = projector.project(
            states.get(event.participant_id), event, event.occurred_at)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state_bytes = [len(json.dumps(s.to_json())) for s in states.values()]
    max_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    cpu = cpu_model()
    lines = [
        SECTION,
        "",
        "Events/s through the pure core (`Projector.project`, policy decision, row diffs, state "
        "copy-on-write) on the simulated example site: 8 partners, "
        f"{args.participants:,} participants, {args.days} days, seed {args.seed}: "
        f"{len(events):,} events ({consent_events:,} consent grants/revocations), "
        "each projected at its own occurred_at, then every participant ticked to the end. "
        "Simulation and JSON are not timed.",
        "",
        f"Command: `.venv/bin/python bench/project.py --participants {args.participants} "
        f"--days {args.days} --seed {args.seed}` (best of {args.runs} runs)",
        "",
        f"Machine: 2 cores (shared with other work), `{cpu}`, Python {python_version()}.",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| events/s (one core, best of {args.runs}) | {rate:,.0f} |",
        f"| µs per event | {1e6 / rate:.1f} |",
        f"| view changes emitted | {changes:,} ({changes / len(events):.1f} per event) |",
        f"| runs (s) | {', '.join(f'{t:.2f}' for t in timings)} |",
        f"| peak traced memory of all participants' states (the Event objects excluded: "
        f"shared with the input list) | {peak / 2**20:,.0f} MiB |",
        f"| process max RSS (incl. the {len(events):,} events held in a list) | "
        f"{max_rss_mib:,.0f} MiB |",
        f"| state JSON per participant, mean / max | {sum(state_bytes) / len(state_bytes):,.0f}"
        f" / {max(state_bytes):,} bytes |",
        "",
        f"Target >= 20,000 events/s: **{'met' if rate >= 20_000 else 'not met'}**. "
        "Re-projection of a participant's history happens only on consent changes "
        "(grant, revocation, a consent starting or expiring); other events project one row per "
        "recipient.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        _write_section(ROOT / "BENCHMARKS.md", report)


def _write_section(path: Path, report: str) -> None:
    """Replace (or append) only this benchmark's section of BENCHMARKS.md."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: report + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + report
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
