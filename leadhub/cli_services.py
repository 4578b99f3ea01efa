"""``leadhub services start|stop|status``: the local Kafka broker and PostgreSQL cluster."""

from __future__ import annotations

import argparse
import json
from typing import Any

from leadhub.services.kafka import KafkaService
from leadhub.services.postgres import PostgresService
from leadhub.settings import load_settings

_WHICH = ("all", "kafka", "postgres")


def register(subparsers: Any) -> None:
    """Add the ``services`` command group."""
    parser = subparsers.add_parser(
        "services",
        help="start, stop or inspect the local Kafka broker and PostgreSQL",
        description=(
            "Run the services the hub needs on this machine without Docker: a single-node KRaft "
            "Kafka broker built from Maven Central jars, and a private PostgreSQL cluster. "
            "LEADHUB_KAFKA_BOOTSTRAP / LEADHUB_DATABASE_URL point at existing ones instead."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, handler, text in (
        ("start", _start, "start what is not running (idempotent)"),
        ("stop", _stop, "stop what this launcher started"),
        ("status", _status, "report each service and its address"),
    ):
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("which", nargs="?", choices=_WHICH, default="all",
                         help="which service (default: all)")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler)


def _selected(which: str) -> list[KafkaService | PostgresService]:
    settings = load_settings()
    services: list[KafkaService | PostgresService] = []
    if which in ("all", "kafka"):
        services.append(KafkaService(settings))
    if which in ("all", "postgres"):
        services.append(PostgresService(settings))
    return services


def _start(args: argparse.Namespace) -> int:
    for service in _selected(args.which):
        print(service.start(), flush=True)
    return 0


def _stop(args: argparse.Namespace) -> int:
    for service in _selected(args.which):
        print(service.stop(), flush=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    report: dict[str, dict[str, Any]] = {}
    for service in _selected(args.which):
        if isinstance(service, KafkaService):
            k = service.status()
            report["kafka"] = {"address": k.bootstrap, "running": k.running,
                               "managed": k.managed, "pid": k.pid,
                               "log": str(k.log_file) if k.log_file else None}
        else:
            p = service.status()
            report["postgres"] = {"address": p.url, "running": p.running,
                                  "managed": p.managed,
                                  "log": str(p.log_file) if p.log_file else None}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, info in report.items():
            state = "running" if info["running"] else "not running"
            origin = "local" if info["managed"] else "external"
            print(f"{name:9} {state:12} {info['address']}  ({origin})")
    return 0 if all(info["running"] for info in report.values()) else 1
