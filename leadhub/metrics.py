"""Prometheus metrics of the hub's processes, served at ``/metrics`` on ``LEADHUB_METRICS_PORT``.

Each process keeps plain counters (the validator's ``ValidatorCounters``, the projector's
``ProjectorCounters``); a collector reads them when Prometheus scrapes, so the processing code
knows nothing of Prometheus. Rates (events/s) are Prometheus' ``rate()`` over the totals.

- ``leadhub_records_total{step}``: records committed (validator: accepted + dead-lettered);
- ``leadhub_batches_total{step}``, ``leadhub_dead_letters_total{step, reason}``;
- ``leadhub_rollbacks_total{step}``: aborted transactions, rolled-back batches;
- ``leadhub_fenced_total{step}``: batches refused because another instance owns the partition;
- ``leadhub_batch_seconds{step}`` (summary): time from poll to commit of a batch;
- ``leadhub_lag_records{step, partition}``: records behind the partition's end (approximate:
  commit markers count);
- ``leadhub_state_reads_total{step, source}`` (projector): participants' states its batches
  read from the cache, from SQL by their head (an ordinary event), or whole (a consent change, a
  deadline, a tick): many ``whole`` reads beside few ``cache`` ones say
  ``LEADHUB_PROJECTOR_CACHE`` is small for the site.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import REGISTRY, Collector

from leadhub.services import ServiceError


class StepCollector(Collector):
    """Exposes one step's counters object (read at scrape time; no locks needed: the values
    are plain numbers and dictionaries replaced or updated by the step's one thread)."""

    def __init__(self, step: str, counters: Any) -> None:
        self.step = step
        self.counters = counters

    def collect(self) -> Iterator[Any]:
        c, step = self.counters, self.step
        records = getattr(c, "records", None)
        if records is None:  # the validator counts what it accepted and what it rejected
            records = c.accepted + sum(c.dead_letters_by_reason.values())
        yield _counter("leadhub_records", "Records committed by the step.", step, records)
        yield _counter("leadhub_batches", "Batches committed.", step, c.batches)
        rollbacks = getattr(c, "rollbacks", getattr(c, "aborts", 0))
        yield _counter("leadhub_rollbacks", "Aborted or rolled-back batches.", step, rollbacks)
        yield _counter("leadhub_fenced", "Batches refused: another instance owns the partition.",
                       step, getattr(c, "fenced", 0))
        dead = CounterMetricFamily("leadhub_dead_letters", "Records sent to lead.dlq.",
                                   labels=["step", "reason"])
        for reason, count in sorted(dict(c.dead_letters_by_reason).items()):
            dead.add_metric([step, reason], count)
        yield dead
        batch = SummaryMetricFamily("leadhub_batch_seconds", "Time from poll to commit.",
                                    labels=["step"])
        batch.add_metric([step], getattr(c, "batches", 0), getattr(c, "batch_seconds", 0.0))
        yield batch
        lag = GaugeMetricFamily("leadhub_lag_records", "Records behind the partition's end.",
                                labels=["step", "partition"])
        for partition, behind in sorted(dict(getattr(c, "lag", {})).items()):
            lag.add_metric([step, str(partition)], behind)
        yield lag
        reads = getattr(c, "state_reads", None)
        if reads is not None:
            family = CounterMetricFamily(
                "leadhub_state_reads", "Participants' states read: cache, SQL head, SQL whole.",
                labels=["step", "source"])
            for source, count in sorted(reads.items()):
                family.add_metric([step, source], count)
            yield family


def _counter(name: str, text: str, step: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=["step"])
    family.add_metric([step], value)
    return family


def serve_metrics(port: int | None, step: str, counters: Any) -> None:
    """Serve ``/metrics`` for ``step`` on ``port`` (all interfaces); None or 0: do nothing.

    Raises :class:`ServiceError` if the port cannot be bound.
    """
    if not port:
        return
    REGISTRY.register(StepCollector(step, counters))
    try:
        start_http_server(port)
    except OSError as exc:
        raise ServiceError(f"{step}: cannot serve metrics on port {port} ({exc.strerror}); "
                           "set LEADHUB_METRICS_PORT to a free port") from exc
