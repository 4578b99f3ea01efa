"""Settings read from ``LEADHUB_*`` environment variables, in one place.

Every process of the hub reads its configuration here and nowhere else. Defaults make a
single-machine developer setup work with no variables at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from schemas.errors import HubError

T = TypeVar("T", int, float)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Ports of the local services started by ``leadhub services start`` (non-default on purpose).
DEFAULT_KAFKA_PORT = 39092
DEFAULT_KAFKA_CONTROLLER_PORT = 39093
DEFAULT_POSTGRES_PORT = 55432


class SettingsError(HubError):
    """A ``LEADHUB_*`` variable has a value the hub cannot use."""


def _number(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T],
            minimum: T) -> T:
    """``env[name]`` parsed by ``parse`` (``default`` when unset or empty), at least
    ``minimum``; SettingsError naming the variable otherwise."""
    raw = env.get(name) or ""
    if not raw.strip():
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {parse.__name__} number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    """The hub's configuration; see README "Configuration reference" for each variable."""

    kafka_bootstrap: str | None
    database_url: str | None
    site_file: Path
    state_dir: Path
    cache_dir: Path
    kafka_version: str
    kafka_port: int
    kafka_controller_port: int
    postgres_port: int
    partitions: int
    topic_prefix: str
    tick_interval_s: float
    metrics_port: int | None
    instance_id: str | None
    projector_cache: int
    kafka_username: str | None
    kafka_password: str | None
    kafka_credentials_dir: Path
    accounts_database_url: str
    log_level: str

    @property
    def local_kafka_bootstrap(self) -> str:
        """Bootstrap address of the broker that the local launcher runs."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def local_database_url(self) -> str:
        """SQLAlchemy URL of the database in the locally launched PostgreSQL cluster."""
        return f"postgresql+psycopg://leadhub@127.0.0.1:{self.postgres_port}/leadhub"

    @property
    def view_database_url(self) -> str:
        """The SQL view: ``LEADHUB_DATABASE_URL`` if set, else embedded SQLite in the state dir."""
        return self.database_url or f"sqlite:///{self.state_dir / 'view.sqlite'}"

    @property
    def effective_kafka_bootstrap(self) -> str:
        """The broker to use: ``LEADHUB_KAFKA_BOOTSTRAP`` if set, else the local one."""
        return self.kafka_bootstrap or self.local_kafka_bootstrap


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: the process environment).

    Raises SettingsError naming the variable whose value is not usable.
    """
    env = dict(os.environ) if environ is None else environ
    state_dir = Path(env.get("LEADHUB_STATE_DIR", str(PROJECT_ROOT / ".leadhub")))
    cache_default = Path(env.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "leadhub"
    return Settings(
        kafka_bootstrap=env.get("LEADHUB_KAFKA_BOOTSTRAP") or None,
        database_url=env.get("LEADHUB_DATABASE_URL") or None,
        site_file=Path(
            env.get("LEADHUB_SITE_FILE", str(PROJECT_ROOT / "config" / "site.example.yaml"))
        ),
        state_dir=state_dir,
        cache_dir=Path(env.get("LEADHUB_CACHE_DIR", str(cache_default))),
        kafka_version=env.get("LEADHUB_KAFKA_VERSION", "4.1.1"),
        kafka_port=_number(env, "LEADHUB_KAFKA_PORT", DEFAULT_KAFKA_PORT, int, 1),
        kafka_controller_port=_number(env, "LEADHUB_KAFKA_CONTROLLER_PORT",
                                      DEFAULT_KAFKA_CONTROLLER_PORT, int, 1),
        postgres_port=_number(env, "LEADHUB_POSTGRES_PORT", DEFAULT_POSTGRES_PORT, int, 1),
        partitions=_number(env, "LEADHUB_PARTITIONS", 4, int, 1),
        topic_prefix=env.get("LEADHUB_TOPIC_PREFIX", ""),
        tick_interval_s=_number(env, "LEADHUB_TICK_SECONDS", 5.0, float, 0.01),
        metrics_port=_number(env, "LEADHUB_METRICS_PORT", 0, int, 0) or None,
        instance_id=env.get("LEADHUB_INSTANCE_ID") or None,
        projector_cache=_number(env, "LEADHUB_PROJECTOR_CACHE", 1_000_000, int, 1),
        kafka_username=env.get("LEADHUB_KAFKA_USERNAME") or None,
        kafka_password=env.get("LEADHUB_KAFKA_PASSWORD") or None,
        kafka_credentials_dir=Path(env.get("LEADHUB_KAFKA_CREDENTIALS_DIR",
                                           str(state_dir / "kafka" / "credentials"))),
        accounts_database_url=env.get("LEADHUB_ACCOUNTS_DATABASE_URL")
        or f"sqlite:///{state_dir / 'accounts.sqlite'}",
        log_level=_log_level(env),
    )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(env: dict[str, str]) -> str:
    raw = env.get("LEADHUB_LOG_LEVEL", "INFO").strip().upper()
    if raw not in LOG_LEVELS:
        raise SettingsError(f"LEADHUB_LOG_LEVEL={raw!r} must be one of {', '.join(LOG_LEVELS)}")
    return raw
