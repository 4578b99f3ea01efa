"""``leadhub demo``: a LEAD site running on this machine, fed by a simulated history.

Starts the local services (unless external ones are configured), creates the topics, runs the
validator, projector and the HTTP API (``leadhub serve``) as supervised child processes,
issues demo credentials, then streams a simulated site at a steady pace — most partners through
the partner SDK, the treatment and housing partners through the HTTP gateway — with progress
output. It prints where the API is, the credentials, and ``curl`` queries that show how the same
participant looks to police, the prosecutor, the case manager and the SUD program, and says when
the view answers them. It makes one staff console user per role of the site and prints the
console's URL with their passwords (and TOTP secrets where the site requires a second factor);
the case manager's display name is the showcase participant's case manager, so "assigned to
me" finds that participant. Once the history is published and the view shows that participant, it
prints an ``export`` line with the values (token, participant, dates, instants) that make the
README's staff and auditor examples answer on this run's data. Runs until Ctrl-C (or
``--duration`` after the history is published), then stops what it started; the services stay
up (``leadhub services stop``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2

from consumers.errors import ProjectionVersionMismatch
from consumers.store import PROJECTION_VERSION, ViewStore
from leadhub.demo_feed import HTTP_ROLES, FeedCounts, GatewayPublisher, feed_site
from leadhub.demo_showcase import (
    STAFF_USERS,
    ConsoleUser,
    Showcase,
    case_manager_of,
    console_lines,
    console_user_name,
    export_line,
    partner_by_role,
    pick_showcase,
    readme_values,
    showcase_queries,
    view_ready,
)
from leadhub.errors import DemoSetupError
from leadhub.kafka_admin import SimulatedPartners
from leadhub.kafka_credentials import kafka_connection
from leadhub.runner import STEPS, Supervisor, stop_on_signals
from leadhub.services.kafka import KafkaService
from leadhub.services.postgres import PostgresService
from leadhub.settings import Settings
from leadhub.topics_admin import create_topics
from processors.projector import Projector
from processors.site import SitePolicy, load_site
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.topics import TopicNames

API_START_TIMEOUT_S = 90.0
READY_MARK = "view ready:"


def _say(text: str = "") -> None:
    print(text, flush=True)


class DemoOptions:
    """What the demo runs: ``participants`` people over ``days`` days at ``rate`` events/s.

    The API listens on ``host``:``port``; ``duration_s`` (None: until Ctrl-C) bounds how long
    the hub keeps running once the history is published.
    """

    def __init__(self, participants: int, days: int, rate: float, seed: int,
                 duration_s: float | None, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.participants = participants
        self.days = days
        self.rate = rate
        self.seed = seed
        self.duration_s = duration_s
        self.host = host
        self.port = port

    @property
    def api_url(self) -> str:
        """Base URL of the demo's HTTP API."""
        return f"http://{self.host}:{self.port}"


def run_demo(settings: Settings, options: DemoOptions, now: datetime) -> int:
    """Run the demo until interrupted or ``options.duration_s`` passes; return an exit code."""
    stop = stop_on_signals()
    _check_port_free(options.host, options.port)
    _say(KafkaService(settings).start())
    if settings.database_url and settings.database_url.startswith("postgresql"):
        _say(PostgresService(settings).start())
    site = load_site(settings.site_file)
    catalog = load_catalog()
    topics = TopicNames(settings.topic_prefix)
    admin = kafka_connection(settings, "admin")
    created = create_topics(admin, topics, site, settings.partitions)
    _say(f"topics: {len(created)} created, {settings.partitions} partitions each")
    events = list(simulate(site, catalog, options.participants, options.days, options.seed,
                           now - timedelta(days=options.days)))
    showcase = pick_showcase(events, Projector(site, catalog), site)
    set_aside_stale_view(settings)
    supervisor = DemoSupervisor(settings.state_dir / "demo-logs")
    store: ViewStore | None = None
    gateway: GatewayPublisher | None = None
    try:
        for step in STEPS:
            supervisor.start(step)
        supervisor.start_command("api", ("serve", "--host", options.host,
                                         "--port", str(options.port)))
        _say(f"hub processes: {', '.join(STEPS)}, api (logs in {supervisor.log_dir})")
        _say(f"view database: {_describe_database(settings.view_database_url)}")
        if not _wait_for_api(options.api_url, stop, supervisor):
            return 130
        _say(f"API: {options.api_url}  (OpenAPI docs: {options.api_url}/docs)")
        store = ViewStore(settings.view_database_url)
        tokens, keys = _issue_credentials(settings, site)
        modes = _http_modes(site)
        _print_credentials(site, tokens, keys, modes)
        manager = (case_manager_of(events, showcase.participant_id)
                   if showcase is not None else None)
        console_users = _issue_console_users(
            settings, site, {"case_management": manager} if manager else {})
        _say("")
        for line in console_lines(options.api_url, console_users, _python_command()):
            _say(line)
        if showcase is not None:
            _print_queries(showcase, options.api_url, tokens, site)
        gateway = GatewayPublisher(options.api_url, keys, catalog, modes, FeedCounts())
        _say(f"streaming {len(events)} simulated events ({options.participants} participants, "
             f"{options.days} days) at {options.rate:g}/s; "
             f"over HTTP: {', '.join(sorted(modes)) or 'none'}")
        watch = _ReadyWatch(store, showcase)
        streamed_from = datetime.now(UTC)

        def progress(counts: FeedCounts, elapsed: float) -> None:
            _say(f"  published {counts.total} of {len(events)} events "
                 f"({counts.sdk} SDK, {counts.http} HTTP; {counts.total / elapsed:.0f}/s)")
            supervisor.restart_dead()
            watch.check()

        counts = feed_site(events, SimulatedPartners(admin, topics), topics, gateway, catalog,
                           options.rate, stop.is_set, progress)
        repeats = f"; {counts.repeats} already published by an earlier run" if (
            counts.repeats) else ""
        _say(f"published {counts.total} events from {len(site.partners)} partners "
             f"({counts.sdk} SDK, {counts.http} HTTP gateway{repeats})")
        if showcase is not None:
            shown, token = showcase, tokens[showcase.partners["case_management"]]
            watch.on_ready(lambda ready_at: _print_readme_values(readme_values(
                shown, token, now, site.intake_deadline_days, streamed_from, ready_at)))
        _keep_running(options, stop, supervisor, watch)
    finally:
        if gateway is not None:
            gateway.close()
        if store is not None:
            store.close()
        supervisor.stop_all()
        _say("demo stopped: processes and API ended (services left running: "
             "leadhub services stop)")
    return 0


class DemoSupervisor(Supervisor):
    """A :class:`Supervisor` that also runs other ``leadhub`` commands (``serve``) by name."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.log_dir: Path = log_dir
        self.commands: dict[str, tuple[str, ...]] = {}

    def start_command(self, name: str, arguments: Sequence[str]) -> None:
        """Start ``leadhub ARGUMENTS...`` as ``name`` (output to ``log_dir/NAME.log``)."""
        self.commands[name] = tuple(arguments)
        self.start(name)

    def start(self, step: str) -> None:
        """Start ``step``: a command given to :meth:`start_command`, else ``leadhub run STEP``."""
        if step not in self.commands:
            super().start(step)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{step}.log").open("ab") as log:
            self.children[step] = subprocess.Popen(
                [sys.executable, "-m", "leadhub.cli", *self.commands[step]],
                stdout=log, stderr=subprocess.STDOUT)


def _keep_running(options: DemoOptions, stop: threading.Event, supervisor: Supervisor,
                  watch: _ReadyWatch) -> None:
    if not stop.is_set():
        _say("the hub keeps running (consent expiry and deadlines tick); Ctrl-C to stop")
    deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
    while not stop.wait(1.0):
        supervisor.restart_dead()
        watch.check()
        if deadline is not None and time.monotonic() > deadline:
            break


class _ReadyWatch:
    """Says once when the live view shows the showcase participant the way the queries need.

    ``ready_at`` is when it saw that; a callback given to :meth:`on_ready` runs once, as soon as
    both it is ready and the callback is given.
    """

    def __init__(self, store: ViewStore, showcase: Showcase | None) -> None:
        self.store = store
        self.showcase = showcase
        self.done = showcase is None
        self.ready_at: datetime | None = None
        self._then: Callable[[datetime], None] | None = None

    def on_ready(self, then: Callable[[datetime], None]) -> None:
        """Run ``then(ready_at)`` once the view is ready (now, if it already is)."""
        self._then = then
        self._fire()

    def check(self) -> None:
        if not self.done and self.showcase is not None:
            rows = {role: self.store.rows_for(partner, self.showcase.participant_id)
                    for role, partner in self.showcase.partners.items()}
            if view_ready(rows):
                self.done = True
                self.ready_at = datetime.now(UTC)
                _say(f"{READY_MARK} the queries above now return rows "
                     f"(participant {self.showcase.participant_id})")
        self._fire()

    def _fire(self) -> None:
        if self._then is not None and self.ready_at is not None:
            then, self._then = self._then, None
            then(self.ready_at)


def _print_readme_values(values: dict[str, str]) -> None:
    _say("")
    _say("Values for the README's examples (For program staff, For auditors) that answer "
         "with rows")
    _say("on this run's data; paste this line into the shell you run them from:")
    _say(f"  {export_line(values)}")
    _say("")


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex((host, port)) == 0:
            raise DemoSetupError(f"port {port} on {host} is in use; pick another with "
                                 "leadhub demo --port")


def _wait_for_api(api_url: str, stop: threading.Event, supervisor: Supervisor) -> bool:
    """True once the API answers; False if stopped first; DemoSetupError on a timeout."""
    deadline = time.monotonic() + API_START_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        try:
            if httpx2.get(f"{api_url}/openapi.json", timeout=2.0).status_code == 200:
                return True
        except httpx2.HTTPError:
            pass
        supervisor.restart_dead()
        time.sleep(0.5)
    if stop.is_set():
        return False
    raise DemoSetupError(f"the API did not answer at {api_url} within "
                         f"{API_START_TIMEOUT_S:.0f}s; see {supervisor.log_dir}/api.log")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def set_aside_stale_view(settings: Settings) -> None:
    """Move the demo's own SQLite view aside when an older projection version built it, so the
    projector re-projects ``lead.events`` into a new one; a view that ``LEADHUB_DATABASE_URL``
    names is never touched (the projector then refuses it, saying what to do)."""
    path = settings.state_dir / "view.sqlite"
    if settings.database_url or not path.exists():
        return
    store = ViewStore(settings.view_database_url)
    try:
        store.create_schema()
        return
    except ProjectionVersionMismatch:
        pass
    finally:
        store.close()
    aside = path.with_name(f"{path.name}.before-v{PROJECTION_VERSION}")
    for suffix in ("", "-wal", "-shm"):
        old = path.with_name(path.name + suffix)
        if old.exists():
            old.replace(aside.with_name(aside.name + suffix))
    _say(f"view database: built by an older projection version, moved to {aside}; "
         "the projector re-projects the demo's events into a new one")


def _describe_database(url: str) -> str:
    """The view database's URL (no password), and how to use PostgreSQL instead of SQLite."""
    if url.startswith("sqlite"):
        return (f"{_safe_url(url)} (SQLite; for PostgreSQL set LEADHUB_DATABASE_URL, "
                "see the README)")
    return _safe_url(url)


def _issue_credentials(settings: Settings, site: SitePolicy) -> tuple[dict[str, str],
                                                                      dict[str, str]]:
    """Staff tokens for the shown roles and partner keys for the HTTP publishers."""
    from consumers.api.accounts import open_accounts
    from consumers.api.auth import CredentialStore

    engine = open_accounts(settings.accounts_database_url)
    try:
        credentials = CredentialStore(engine, site)
        roles = partner_by_role(site)
        tokens = {roles[role]: credentials.create(roles[role], "staff", user).secret
                  for role, user in STAFF_USERS.items() if role in roles}
        keys = {partner: credentials.create(partner, "partner").secret
                for partner in _http_modes(site)}
    finally:
        engine.dispose()
    return tokens, keys


def _issue_console_users(settings: Settings, site: SitePolicy,
                         display_names: dict[str, str]) -> list[ConsoleUser]:
    """One console user per role of the site (its first partner), with a new password — and a
    new TOTP secret where the site requires one — on every run; ``display_names`` by role."""
    from consumers.api.accounts import open_accounts
    from consumers.console.users import StaffUsers

    engine = open_accounts(settings.accounts_database_url)
    made: list[ConsoleUser] = []
    try:
        users = StaffUsers(engine, site)
        existing = {user.user_name for user in users.list()}
        for role, partner_id in partner_by_role(site).items():
            name = console_user_name(role)
            display_name = display_names.get(role)
            if name in existing:
                users.set_display_name(name, display_name)
                partner = site.partner(partner_id)
                issued = users.reset_password(name, new_totp=partner is not None
                                              and users.totp_required(partner))
            else:
                issued = users.create(name, partner_id, display_name=display_name)
            made.append(ConsoleUser(role, issued.user.partner, name, issued.password,
                                    issued.totp_secret, issued.totp_uri, display_name))
    finally:
        engine.dispose()
    return made


def _http_modes(site: SitePolicy) -> dict[str, str]:
    roles = partner_by_role(site)
    return {roles[role]: mode for role, mode in HTTP_ROLES.items() if role in roles}


def _print_credentials(site: SitePolicy, tokens: dict[str, str], keys: dict[str, str],
                       modes: dict[str, str]) -> None:
    names = {p.id: p for p in site.partners}
    _say("")
    _say("Demo credentials (new for this run; manage with leadhub keys list|revoke):")
    for partner, token in tokens.items():
        _say(f"  staff token  {partner:16} ({names[partner].role}, purpose "
             f"{names[partner].purpose}): {token}")
    for partner, key in keys.items():
        how = "POST /v1/events, Avro" if modes[partner] == "single" else (
            "POST /v1/events:batch, JSON")
        _say(f"  partner key  {partner:16} (publishes over HTTP: {how}): {key}")


def _print_queries(showcase: Showcase, api_url: str, tokens: dict[str, str],
                   site: SitePolicy) -> None:
    purposes = {p.id: p.purpose for p in site.partners}
    _say("")
    _say(f"The same participant ({showcase.participant_id}) as each partner sees it "
         "(copy-paste into another terminal):")
    for comment, command in showcase_queries(showcase, api_url, tokens, purposes):
        _say(f"  # {comment}")
        _say(f"  {command}")
    manager = showcase.partners["case_management"]
    _say("  # or through the CLI")
    _say(f"  {_leadhub_command()} view --api {api_url} --token {tokens[manager]} --as {manager} "
         f"--participant {showcase.participant_id}")
    _say("")


def _leadhub_command() -> str:
    """How to run ``leadhub`` from the current directory (the venv's script if not on PATH)."""
    import shutil

    script = Path(sys.executable).parent / "leadhub"
    if not script.exists() or shutil.which("leadhub") == str(script):
        return "leadhub"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _python_command() -> str:
    """How to run this Python from the current directory (relative when inside it)."""
    python = Path(sys.executable)
    try:
        return str(python.relative_to(Path.cwd()))
    except ValueError:
        return str(python)


def default_now() -> datetime:
    """The demo's clock: the history it simulates ends now."""
    return datetime.now(UTC)
