"""Benchmark: reading participant states back from a projector's view (``ProjectionStore.load``).

A projector reads a participant's state back from SQL whenever its cache does not hold it: after
a restart, and all the time at a site whose states outgrow the cache (BENCHMARKS.md, "Projector
at scale"). This bench reads ``--sample`` participants, chosen at random (``--seed``) among the
view's ``participant_heads``, back from an existing view (a SQLite file or a database URL, e.g.
the view a ``bench/scale.py --run-dir`` run keeps), in chunks of ``READ_BACK_CHUNK`` as the live
projector does, ``--rounds`` times, and reports per participant: CPU (this process), wall time,
events and rows read back, and the process's peak memory. Nothing is written.

``--baseline DIR`` measures a second checkout of the project in the same run: each round runs
the baseline and this code in turn (who goes first alternates), each in a child process
(``PYTHONPATH``), so both meet the same machine; the figures are printed side by side.

    .venv/bin/python bench/state_load.py --view /work/scale-run/view.sqlite [--sample 2000]
                                         [--baseline /tmp/base] [--rounds 3] [--json]

Progress goes to stderr; ``--json`` prints the figures as JSON. Exit codes: 0 figures printed,
1 the run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from consumers.batch_states import READ_BACK_CHUNK
from consumers.projection_store import ProjectionStore, participant_heads
from consumers.store import ViewStore

ROOT = Path(__file__).resolve().parent.parent


def view_url(view: str) -> str:
    """A database URL for ``view``: a URL as it is, a path as a SQLite file."""
    return view if "://" in view else f"sqlite:///{Path(view).resolve()}"


def sample_ids(store: ViewStore, sample: int, seed: int) -> list[str]:
    """``sample`` participant ids drawn at random (seeded) from the view's heads."""
    with store.engine.connect() as connection:
        ids = sorted(connection.execute(select(participant_heads.c.participant_id)).scalars())
    return random.Random(seed).sample(ids, min(sample, len(ids)))


def measure(view: str, sample: int, seed: int) -> dict[str, Any]:
    """Read the sample back once, in this process, and return the figures."""
    store = ViewStore(view_url(view))
    ids = sample_ids(store, sample, seed)
    states = ProjectionStore(store)
    events = rows = 0
    cpu, wall = time.process_time(), time.perf_counter()
    with store.engine.connect() as connection:
        for start in range(0, len(ids), READ_BACK_CHUNK):
            for stored in states.load(connection, ids[start:start + READ_BACK_CHUNK]).values():
                events += len(stored.state.events)
                rows += sum(len(shapes) for shapes in stored.state.rows.values())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "participants": len(ids),
        "events_per_participant": events / len(ids),
        "rows_per_participant": rows / len(ids),
        "cpu_ms_per_participant": cpu * 1000 / len(ids),
        "wall_ms_per_participant": wall * 1000 / len(ids),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "code": str(Path(sys.modules[ProjectionStore.__module__].__file__ or "").parent.parent),
    }


def measure_in_child(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` in a child process importing the project from ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "state_load.py"), "--view", args.view,
         "--sample", str(args.sample), "--seed", str(args.seed), "--child"],
        env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the measurement with {root} failed: {done.stderr[-400:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--view", required=True,
                        help="the view: a SQLite file or a database URL")
    parser.add_argument("--sample", type=int, default=2000,
                        help="participants read back per round (2000)")
    parser.add_argument("--seed", type=int, default=1, help="the sample's seed (1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of other code to measure in the same rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.view, args.sample, args.seed)))
        return 0
    codes = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
    try:
        for round_ in range(1, args.rounds + 1):
            order = list(codes.items())  # who goes first alternates between rounds
            for name, root in order if round_ % 2 else order[::-1]:
                figures = measure_in_child(root, args)
                results[name].append(figures)
                print(f"[state_load] round {round_}, {name} ({root}): "
                      f"{figures['cpu_ms_per_participant']:.2f} ms CPU per participant",
                      file=sys.stderr, flush=True)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"state_load: {exc}", file=sys.stderr)
        return 1
    summary = {name: summarize(runs) for name, runs in results.items()}
    if args.json:
        print(json.dumps({"view": args.view, "sample": args.sample, "rounds": results,
                          "summary": summary}, indent=2))
    else:
        for name, figures in summary.items():
            print(f"{name} ({codes[name]}): {figures['participants']} participants, "
                  f"{figures['events_per_participant']:.1f} events and "
                  f"{figures['rows_per_participant']:.1f} rows each; CPU per participant "
                  f"median {figures['cpu_ms_per_participant']:.2f} ms "
                  f"(rounds {', '.join(f'{x:.2f}' for x in figures['cpu_rounds'])}), wall "
                  f"median {figures['wall_ms_per_participant']:.2f} ms; "
                  f"peak RSS {figures['peak_rss_mib']:.0f} MiB")
    return 0


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of one code, with each round's CPU figure."""
    return {
        "participants": runs[0]["participants"],
        "events_per_participant": runs[0]["events_per_participant"],
        "rows_per_participant": runs[0]["rows_per_participant"],
        "cpu_ms_per_participant": statistics.median(r["cpu_ms_per_participant"] for r in runs),
        "cpu_rounds": [r["cpu_ms_per_participant"] for r in runs],
        "wall_ms_per_participant": statistics.median(r["wall_ms_per_participant"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
    }


if __name__ == "__main__":
    sys.exit(main())
