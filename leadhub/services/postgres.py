"""A private PostgreSQL cluster for the project, from the operating system's packages.

If ``LEADHUB_DATABASE_URL`` is set, that database is used and nothing is started. Otherwise
Debian's ``postgresql`` package is installed when missing (as root), a cluster is initialised
in ``state_dir/postgres`` (as the ``postgres`` user when running as root: initdb refuses root)
and started on its own port with a ``leadhub`` role and database.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from leadhub.services import PrerequisiteMissing, ServiceError
from leadhub.services.process import run_checked
from leadhub.settings import Settings

_PG_ROOT = Path("/usr/lib/postgresql")


def find_pg_bin() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/<v>/bin`` holding initdb and pg_ctl, if any."""
    if not _PG_ROOT.is_dir():
        return None
    candidates = sorted(
        (p / "bin" for p in _PG_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def database_answers(url: str, timeout_s: int = 3) -> bool:
    """True if a connection to ``url`` succeeds and ``SELECT 1`` answers."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    connect_args = {"connect_timeout": timeout_s} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _cluster_home(state_dir: Path) -> Path:
    """Where the cluster lives: ``state_dir/postgres``, unless the ``postgres`` user (which
    runs the server when we are root) cannot reach that folder — e.g. a checkout under
    ``/root`` — in which case a folder under ``/var/tmp`` named after the state dir is used.
    """
    home = state_dir / "postgres"
    if os.geteuid() != 0:
        return home
    probe = next((p for p in [state_dir, *state_dir.parents] if p.exists()), Path("/"))
    reachable = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(probe)],
        capture_output=True, check=False,
    ).returncode == 0
    if reachable:
        return home
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"leadhub-{digest}" / "postgres"


@dataclass(frozen=True)
class PostgresStatus:
    """What ``status`` reports about the database."""

    url: str
    running: bool
    managed: bool
    data_dir: Path | None
    log_file: Path | None


class PostgresService:
    """The local cluster: data, socket and log under ``state_dir/postgres``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = _cluster_home(settings.state_dir)
        self.data_dir = self.home / "data"
        self.socket_dir = self.home / "run"
        self.log_file = self.home / "postgres.log"

    @property
    def external(self) -> bool:
        return self.settings.database_url is not None

    @property
    def url(self) -> str:
        return self.settings.database_url or self.settings.local_database_url

    def status(self) -> PostgresStatus:
        """Report whether the database answers and whether this launcher manages it."""
        return PostgresStatus(
            url=self.url,
            running=database_answers(self.url),
            managed=not self.external,
            data_dir=None if self.external else self.data_dir,
            log_file=None if self.external else self.log_file,
        )

    def start(self) -> str:
        """Ensure the database answers; return a one-line account of what was done."""
        if self.external:
            if not database_answers(self.url):
                raise ServiceError(
                    "LEADHUB_DATABASE_URL does not answer; start that database or unset the "
                    "variable to use the local cluster"
                )
            return "postgres: using LEADHUB_DATABASE_URL"
        pg_bin = self._ensure_installed()
        self._init_cluster(pg_bin)
        if self._server_running(pg_bin):
            self._ensure_database(pg_bin)
            return f"postgres: already running at 127.0.0.1:{self.settings.postgres_port}"
        self._as_owner(
            [
                str(pg_bin / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.settings.postgres_port} -k {self.socket_dir} "
                "-c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                "start",
            ],
            what="starting PostgreSQL",
        )
        self._ensure_database(pg_bin)
        return f"postgres: started at 127.0.0.1:{self.settings.postgres_port} (log {self.log_file})"

    def stop(self) -> str:
        """Stop the cluster this launcher runs; leave external databases alone."""
        if self.external:
            return "postgres: external database left running"
        pg_bin = find_pg_bin()
        if pg_bin is None or not self._server_running(pg_bin):
            return "postgres: not running"
        self._as_owner(
            [str(pg_bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            what="stopping PostgreSQL",
        )
        return "postgres: stopped"

    def _ensure_installed(self) -> Path:
        pg_bin = find_pg_bin()
        if pg_bin is not None:
            return pg_bin
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise PrerequisiteMissing(
                "PostgreSQL server not found: install it (apt-get install postgresql) "
                "or set LEADHUB_DATABASE_URL"
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q",
                                                      "postgresql"]):
            result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if result.returncode != 0:
                raise PrerequisiteMissing(
                    f"installing PostgreSQL failed ({' '.join(command)}): "
                    + result.stderr.strip()[-500:]
                )
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise PrerequisiteMissing("PostgreSQL installed but initdb not found")
        return pg_bin

    def _init_cluster(self, pg_bin: Path) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.home.parent.chmod(0o755)
            shutil.chown(self.home, "postgres", "postgres")
            shutil.chown(self.data_dir, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._as_owner(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            what="initialising the PostgreSQL cluster",
        )

    def _server_running(self, pg_bin: Path) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        result = subprocess.run(
            [*self._owner_prefix(), str(pg_bin / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _ensure_database(self, pg_bin: Path) -> None:
        psql = [
            str(pg_bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.settings.postgres_port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
        ]
        exists = run_checked(
            [*psql, "SELECT 1 FROM pg_roles WHERE rolname = 'leadhub'"], what="checking role"
        )
        if exists.strip() != "1":
            run_checked([*psql, "CREATE ROLE leadhub LOGIN CREATEDB"], what="creating role")
        exists = run_checked(
            [*psql, "SELECT 1 FROM pg_database WHERE datname = 'leadhub'"], what="checking db"
        )
        if exists.strip() != "1":
            run_checked([*psql, "CREATE DATABASE leadhub OWNER leadhub"], what="creating db")

    def _owner_prefix(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _as_owner(self, command: Sequence[str], what: str) -> None:
        run_checked(self._owner_prefix() + list(command), what=what, cwd=Path("/"))
