"""``leadhub demo``: a LEAD site running on this machine, fed by a simulated history.

Starts the local services (unless external ones are configured), creates the topics, runs the
validator, projector and sink as child processes, then publishes a simulated site through the
partner SDK at a steady pace with progress output, and prints queries that show how the same
participant looks to police, the prosecutor and the case manager. Runs until Ctrl-C (or
``--duration``), then stops what it started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from leadhub.runner import STEPS, Supervisor, stop_on_signals
from leadhub.services.kafka import KafkaService
from leadhub.services.postgres import PostgresService
from leadhub.settings import Settings
from leadhub.topics_admin import create_topics
from processors.site import load_site
from producers.sdk import publish_by_source
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.topics import TopicNames


def _say(text: str) -> None:
    print(text, flush=True)


class DemoOptions:
    """What the demo runs: ``participants`` people over ``days`` days at ``rate`` events/s."""

    def __init__(self, participants: int, days: int, rate: float, seed: int,
                 duration_s: float | None) -> None:
        self.participants = participants
        self.days = days
        self.rate = rate
        self.seed = seed
        self.duration_s = duration_s


def run_demo(settings: Settings, options: DemoOptions, now: datetime) -> int:
    """Run the demo until interrupted or ``options.duration_s`` passes; return an exit code."""
    stop = stop_on_signals()
    _say(KafkaService(settings).start())
    if settings.database_url and settings.database_url.startswith("postgresql"):
        _say(PostgresService(settings).start())
    site = load_site(settings.site_file)
    topics = TopicNames(settings.topic_prefix)
    created = create_topics(settings.effective_kafka_bootstrap, topics, site,
                            settings.partitions)
    _say(f"topics: {len(created)} created, {settings.partitions} partitions each")
    supervisor = Supervisor(settings.state_dir / "demo-logs")
    for step in STEPS:
        supervisor.start(step)
    _say(f"hub processes: {', '.join(STEPS)} (logs in {supervisor.log_dir})")
    _say(f"view database: {settings.view_database_url}")
    start = now - timedelta(days=options.days)
    events = simulate(site, load_catalog(), options.participants, options.days, options.seed,
                      start)
    try:
        published = _publish_paced(settings, topics, events, options.rate, stop)
        _say(f"published {published} events from {len(site.partners)} partners")
        _print_queries()
        deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
        _say("the hub keeps running (consent expiry and deadlines tick); Ctrl-C to stop")
        while not stop.wait(1.0):
            supervisor.restart_dead()
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        supervisor.stop_all()
        _say("demo stopped (services left running: leadhub services stop)")
    return 0


def _publish_paced(settings: Settings, topics: TopicNames, events: Iterator[Event],
                   rate: float, stop: threading.Event) -> int:
    """Publish through each partner's SDK publisher at about ``rate`` events/s."""
    return publish_by_source(
        events, settings.effective_kafka_bootstrap, topics=topics, rate=rate,
        should_stop=stop.is_set,
        on_progress=lambda n, s: _say(f"  published {n} events ({n / s:.0f}/s)"),
    )


def _print_queries() -> None:
    _say("")
    _say("What each partner sees of the same people (run in another terminal):")
    for partner, who in (("evergreen-pd", "police: program status and referrals only"),
                         ("county-pao", "prosecutor: + legal case, whether intake was met"),
                         ("harbor-cm", "case manager: what consents allow"),
                         ("riverbend-sud", "SUD program: Part 2 rows carry the notice")):
        _say(f"  # {who}")
        _say(f"  .venv/bin/leadhub view --as {partner} | tail -5")
    _say("  .venv/bin/leadhub view --as harbor-cm --json --participant <id from above>")
    _say("")


def default_now() -> datetime:
    """The demo's clock: the history it simulates ends now."""
    return datetime.now(UTC)
