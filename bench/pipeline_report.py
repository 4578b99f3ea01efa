"""The pipeline benchmark's figures and how they are printed: table, JSON, profiles."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import pstats
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (nan if empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p99, max (seconds) of latencies."""
    return {"count": len(values), "p50_s": percentile(values, 50),
            "p99_s": percentile(values, 99), "max_s": max(values) if values else math.nan}


@dataclass
class Results:
    """Everything the run measured (JSON-ready through :meth:`as_json`)."""

    machine: dict[str, Any] = field(default_factory=dict)
    sustained: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    revocation: dict[str, Any] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)
    topics_mib: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    thread_cpu_s: dict[str, list[float]] = field(default_factory=dict)
    sink: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, bool] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, float):
                return None if math.isnan(value) else round(value, 4)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return {k: clean(v) for k, v in self.__dict__.items()}


def print_profiles(sink_profiler: cProfile.Profile | None, state_dir: Path,
                    lines: int, keep_in: Path | None) -> None:
    """Top functions by own time of the sink thread and of each child, on stderr.

    The children's profiles cover their main thread (the faust agents); the aiokafka consumer
    runs in a thread of its own (see the per-thread CPU figures).
    """
    sources: list[tuple[str, cProfile.Profile | str]] = []
    if sink_profiler is not None:
        sink_profiler.dump_stats(str(state_dir / "sink.prof"))
        sources.append(("sink thread", sink_profiler))
    if keep_in is not None:
        keep_in.mkdir(parents=True, exist_ok=True)
        for name in ("sink", "validator", "projector"):
            with contextlib.suppress(OSError):
                (keep_in / f"{name}.prof").write_bytes(
                    (state_dir / f"{name}.prof").read_bytes())
    for step in ("validator", "projector"):
        path = state_dir / f"{step}.prof"
        if path.exists():
            sources.append((step, str(path)))
    for name, source in sources:
        buffer = io.StringIO()
        pstats.Stats(source, stream=buffer).sort_stats("tottime").print_stats(lines)
        print(f"\n===== profile: {name} (by own time) =====", file=sys.stderr)
        print(buffer.getvalue(), file=sys.stderr)


def render(results: Results, args: argparse.Namespace) -> str:
    """The human-readable table."""
    s, lat, rev, ceil = results.sustained, results.latency, results.revocation, results.ceiling

    def ms(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value * 1000:,.0f} ms"

    def met(name: str) -> str:
        return "met" if results.targets.get(name) else "NOT met"

    rows = [
        ("sustained events/s (first send -> last own row committed)",
         f"{s['events_per_s']:,.0f}", f">= 5,000: {met('sustained >= 5000 events/s')}"),
        ("  events, elapsed", f"{s['events']:,} in {s['elapsed_s']:.1f} s"
         + ("" if s["complete"] else f" (only {s['visible']:,} visible)"), ""),
        ("  SDK publish alone (send + flush)", f"{s['publish_events_per_s']:,.0f}/s", ""),
        (f"latency at {lat['rate_asked']:,.0f}/s (achieved {lat['rate_achieved']:,.0f}/s, "
         f"{lat['duration_s']:.0f} s, {lat['count']:,} events) p50",
         ms(lat["p50_s"]), ""),
        ("  p99", ms(lat["p99_s"]), f"<= 1 s: {met('p99 <= 1 s at the fixed rate')}"),
        ("  max", ms(lat["max_s"]), ""),
        (f"revocation -> retraction committed ({rev['count']} of {rev['revocations']}) p50",
         ms(rev["p50_s"]), ""),
        ("  p99", ms(rev["p99_s"]), f"<= 1 s: {met('revocation p99 <= 1 s')}"),
        ("  max", ms(rev["max_s"]), ""),
        ("raw KafkaConsumer, inbound topics, no decoding",
         f"{ceil['messages_per_s']:,.0f} msg/s", f"{ceil['messages']:,} messages"),
        ("pipeline / raw", f"{ceil['pipeline_over_raw']:.1%}", ""),
    ]
    rows += [(f"peak memory, {k}", f"{v:,.0f} MiB", "") for k, v in results.memory_mib.items()]
    rows += [(f"CPU during sustained phase, {k}", f"{v:.1f} s",
              f"{v / s['events'] * 1000:.3f} ms/event")
             for k, v in s["child_cpu_s"].items()]
    rows.append(("CPU during sustained phase, whole machine (all processes)",
                 f"{s['machine_cpu_s']:.1f} s",
                 f"{s['machine_cpu_s'] / s['events'] * 1000:.3f} ms/event; 5,000 events/s on "
                 f"{results.machine['nproc']} cores needs <= "
                 f"{results.machine['nproc'] / 5000 * 1000:.3f}"))
    rows += [(f"CPU by thread at the end, {k} (main, then busiest others)",
              " / ".join(f"{x:.0f}" for x in v) + " s", "")
             for k, v in results.thread_cpu_s.items()]
    rows.append(("sink batches / changes", f"{results.sink['batches']:,} / "
                 f"{results.sink['changes']:,}",
                 f"{results.sink['changes_per_batch']:,.0f} per batch"))
    rows.append(("machine CPU busy during sustained phase (2 cores = 100%)",
                 f"{s['machine_busy']:.0%}", ""))
    alone = results.sink.get("alone", {})
    if alone:
        per_event = results.sink["changes"] / max(1, publishers_total(results))
        rows.append((f"sink alone, replaying a backlog into a fresh {results.sink['backend']}",
                     f"{alone['changes_per_s']:,.0f} changes/s",
                     f"~{alone['changes_per_s'] / per_event:,.0f} events/s "
                     f"at {per_event:.1f} changes/event"))
    last = results.stages.get("sustained_last_record_s", {})
    rows += [(f"sustained: last record of {k} at", f"{v:.1f} s",
              f"{s['events'] / v:,.0f} events/s" if v else "") for k, v in last.items()]
    inbound = sum(v for k, v in results.topics_mib.items() if k.startswith("lead.in."))
    rows.append(("bytes on disk, all inbound topics", f"{inbound:,.1f} MiB", ""))
    rows += [(f"bytes on disk, {k}", f"{v:,.1f} MiB", f"{v / inbound:,.0f}x inbound"
              if inbound else "") for k, v in results.topics_mib.items()
             if not k.startswith("lead.in.") and v >= 0.1]
    for phase in ("paced", "revocation"):
        for name, stats in results.stages.get(phase, {}).items():
            rows.append((f"{phase}: {name} p50 / p99",
                         f"{ms(stats['p50_s'])} / {ms(stats['p99_s'])}", ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"leadhub pipeline benchmark - {results.machine['nproc']} cores "
             f"({results.machine['cpu']}), Python {results.machine['python']}, "
             f"load {results.machine['load_before'][0]:.2f} before / "
             f"{results.machine.get('load_after', (math.nan,))[0]:.2f} after",
             f"{'figure':<{width}}  {'value':>18}  note", "-" * (width + 40)]
    lines += [f"{a:<{width}}  {b:>18}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def publishers_total(results: Results) -> int:
    """Events sent through the SDK in the run (the raw consumer's expected count)."""
    return int(results.ceiling.get("expected", 0))
