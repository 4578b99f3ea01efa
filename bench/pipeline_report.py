"""The pipeline benchmark's figures and how they are printed: table, JSON, profiles."""

from __future__ import annotations

import argparse
import contextlib
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


#: Targets of the pipeline issue, checked by :func:`targets`.
TARGET_CORE_RATIO = 0.25
TARGET_CPU_MS_PER_EVENT = 0.35
TARGET_P99_S = 0.250
TARGET_REVOCATION_P99_S = 0.200


@dataclass
class Results:
    """Everything the run measured (JSON-ready through :meth:`as_json`)."""

    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    sustained: dict[str, Any] = field(default_factory=dict)
    warmup: dict[str, Any] = field(default_factory=dict)
    core: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    revocation: dict[str, Any] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    projector: dict[str, Any] = field(default_factory=dict)
    projector_alone: dict[str, Any] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)
    topics_mib: dict[str, float] = field(default_factory=dict)
    thread_cpu_s: dict[str, list[float]] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, bool] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, float):
                return None if math.isnan(value) else round(value, 6)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return value

        return {k: clean(v) for k, v in self.__dict__.items()}

    def core_ratio(self) -> float:
        """End-to-end sustained events/s over the pure core's events/s, same events."""
        return float(self.sustained["events_per_s"] / self.core["events_per_s"])

    def cpu_ms_per_event(self, phase: str = "sustained") -> float:
        """CPU of every counted process during ``phase`` (``sustained`` or ``warmup``), per
        event, in ms."""
        figures = getattr(self, phase)
        return float(figures["cpu_total_s"] / figures["events"] * 1000)


def targets(results: Results) -> dict[str, bool]:
    """Which of the issue's targets the run met."""
    return {
        f"end-to-end / core >= {TARGET_CORE_RATIO}": results.core_ratio() >= TARGET_CORE_RATIO,
        f"CPU per event (all processes) <= {TARGET_CPU_MS_PER_EVENT} ms":
            results.cpu_ms_per_event() <= TARGET_CPU_MS_PER_EVENT,
        f"p99 <= {TARGET_P99_S * 1000:.0f} ms at the fixed rate":
            results.latency["p99_s"] <= TARGET_P99_S,
        f"revocation p99 <= {TARGET_REVOCATION_P99_S * 1000:.0f} ms":
            results.revocation["p99_s"] <= TARGET_REVOCATION_P99_S,
    }


def print_profiles(state_dir: Path, children: Sequence[str], lines: int,
                   keep_in: Path | None) -> None:
    """Top functions by own time of each child (``NAME.prof`` in ``state_dir``, written by
    cProfile when the child exited), on stderr; copied to ``keep_in`` if given.

    The profiles cover the children's main thread (the validator's loop, the projector's
    loop); kafka-python's I/O runs in a thread of its own (see the per-thread CPU figures).
    """
    if keep_in is not None:
        keep_in.mkdir(parents=True, exist_ok=True)
        for name in children:
            with contextlib.suppress(OSError):
                (keep_in / f"{name}.prof").write_bytes(
                    (state_dir / f"{name}.prof").read_bytes())
    for name in children:
        path = state_dir / f"{name}.prof"
        if not path.exists():
            print(f"\n===== profile: {name}: none written =====", file=sys.stderr)
            continue
        buffer = io.StringIO()
        pstats.Stats(str(path), stream=buffer).sort_stats("tottime").print_stats(lines)
        print(f"\n===== profile: {name} (by own time) =====", file=sys.stderr)
        print(buffer.getvalue(), file=sys.stderr)


def render(results: Results, args: argparse.Namespace) -> str:
    """The human-readable table."""
    s, lat, rev, ceil = results.sustained, results.latency, results.revocation, results.ceiling
    core, alone = results.core, results.projector_alone

    def ms(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value * 1000:,.0f} ms"

    def met(prefix: str) -> str:
        found = [ok for name, ok in results.targets.items() if name.startswith(prefix)]
        return "met" if found and all(found) else "NOT met"

    rows = [
        ("sustained events/s (SDK send -> last own row committed)",
         f"{s['events_per_s']:,.0f}", ""),
        ("  events, elapsed", f"{s['events']:,} in {s['elapsed_s']:.1f} s"
         + ("" if s["complete"] else f" (only {s['visible']:,} visible)"), ""),
        ("  SDK publish alone (send + flush)", f"{s['publish_events_per_s']:,.0f}/s", ""),
        ("pure core, same events (ProjectionStep over memory, best of "
         f"{len(core['runs_s'])})", f"{core['events_per_s']:,.0f}",
         f"{core['events']:,} events + {core['clock_records']:,} CLOCK records"),
        ("end-to-end / core", f"{results.core_ratio():.3f}",
         f">= {TARGET_CORE_RATIO}: {met('end-to-end / core')}"),
        ("CPU per event, all processes below, sustained phase",
         f"{results.cpu_ms_per_event():.3f} ms",
         f"<= {TARGET_CPU_MS_PER_EVENT} ms: {met('CPU per event')}"),
    ]
    rows += [(f"  CPU, {k}", f"{v:.1f} s", f"{v / s['events'] * 1000:.3f} ms/event")
             for k, v in s["cpu_s"].items()]
    rows.append(("  whole machine (incl. other users' work)",
                 f"{s['machine_cpu_s']:.1f} s",
                 f"{s['machine_cpu_s'] / s['events'] * 1000:.3f} ms/event, "
                 f"busy {s['machine_busy']:.0%} of {results.machine['nproc']} cores"))
    if results.warmup:
        warm = results.warmup
        broker = warm["cpu_s"].get("broker", math.nan) / warm["events"] * 1000
        rows.append((f"warm-up before it ({warm['events']:,} events, not counted)",
                     f"{results.cpu_ms_per_event('warmup'):.3f} ms",
                     f"CPU per event (the broker's: {broker:.3f} ms)"))
    rows += [
        (f"latency at {lat['rate_asked']:,.0f}/s (achieved {lat['rate_achieved']:,.0f}/s, "
         f"{lat['duration_s']:.0f} s, {lat['count']:,} events) p50", ms(lat["p50_s"]), ""),
        ("  p99", ms(lat["p99_s"]), f"<= {TARGET_P99_S * 1000:.0f} ms: {met('p99')}"),
        ("  max", ms(lat["max_s"]), ""),
        *([("  the machine meanwhile: I/O stall (worst second) / CPU stall",
            f"{lat['io_stall_s']:.2f} ({lat['io_worst_second_s']:.2f}) / "
            f"{lat['cpu_stall_s']:.2f} s",
            "Linux PSI: seconds some task waited")] if "io_stall_s" in lat else []),
        *([("  dirty pages written out before it", f"{lat['sync_before_s']:.1f} s",
            "os.sync: the earlier phases' writes are not written back during it")]
          if "sync_before_s" in lat else []),
        (f"revocation -> retraction committed ({rev['count']} of {rev['revocations']}) p50",
         ms(rev["p50_s"]), ""),
        ("  p99", ms(rev["p99_s"]),
         f"<= {TARGET_REVOCATION_P99_S * 1000:.0f} ms: {met('revocation')}"),
        ("  max", ms(rev["max_s"]), ""),
        ("raw KafkaConsumer, the same inbound messages, no decoding",
         f"{ceil['messages_per_s']:,.0f} msg/s", f"{ceil['messages']:,} messages"),
        ("end-to-end / raw consume", f"{s['events_per_s'] / ceil['messages_per_s']:.1%}", ""),
    ]
    if alone:
        rows.append(("projector alone, the run's lead.events as a backlog, fresh view",
                     f"{alone['records_per_s']:,.0f} records/s",
                     f"{alone['records']:,} records in {alone['elapsed_s']:.1f} s, "
                     f"{alone['cpu_s'] / max(1, alone['records']) * 1000:.3f} ms CPU each"))
    p = results.projector
    if p:
        codes = p.get("exit_codes", {})
        failed = {name: code for name, code in codes.items() if code != 0}
        rows.append(("live projector batches / records / row changes",
                     f"{p['batches']:,} / {p['records']:,} / {p['changes']:,}",
                     f"{p['records'] / max(1, p['batches']):,.0f} records per batch"
                     + (f"; counters of {len(p['reported'])} of {len(codes)} only"
                        if len(p.get("reported", ())) < len(codes) else "")
                     + (f"; exit codes {failed}" if failed else "")))
    rows += [(f"peak memory, {k}", f"{v:,.0f} MiB", "") for k, v in results.memory_mib.items()]
    rows += [(f"CPU by thread at the end, {k} (main, then busiest others)",
              " / ".join(f"{x:.0f}" for x in v) + " s", "")
             for k, v in results.thread_cpu_s.items()]
    last = results.stages.get("sustained_last_record_s", {})
    rows += [(f"sustained: last record of {k} at", f"{v:.1f} s",
              f"{s['events'] / v:,.0f} events/s" if v and not math.isnan(v) else "")
             for k, v in last.items()]
    inbound = sum(v for k, v in results.topics_mib.items() if k.startswith("lead.in."))
    rows.append(("bytes on disk, all inbound topics", f"{inbound:,.1f} MiB", ""))
    rows += [(f"bytes on disk, {k}", f"{v:,.1f} MiB", f"{v / inbound:,.1f}x inbound"
              if inbound else "") for k, v in results.topics_mib.items()
             if not k.startswith("lead.in.") and v >= 0.1]
    for phase in ("sustained", "paced", "revocation"):
        for name, stats in results.stages.get(phase, {}).items():
            rows.append((f"{phase}: {name} p50 / p99",
                         f"{ms(stats['p50_s'])} / {ms(stats['p99_s'])}",
                         f"{stats['count']:,} events"))
    width = max(len(r[0]) for r in rows)
    cfg = results.config
    lines = [f"leadhub pipeline benchmark - {results.machine['nproc']} cores "
             f"({results.machine['cpu']}), Python {results.machine['python']}, "
             f"load {results.machine['load_before'][0]:.2f} before / "
             f"{results.machine.get('load_after', (math.nan,))[0]:.2f} after",
             f"view: {cfg.get('backend')}; {cfg.get('validators')} validator process(es), "
             f"{cfg.get('projectors')} projector process(es); {cfg.get('partitions')} "
             "partitions",
             f"{'figure':<{width}}  {'value':>18}  note", "-" * (width + 40)]
    lines += [f"{a:<{width}}  {b:>18}  {c}" for a, b, c in rows]
    return "\n".join(lines)
