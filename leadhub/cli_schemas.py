"""``leadhub schemas ...``: inspect and check the event catalog (``schemas/avro/*.avsc``) and
list the Avro formats of the hub's own topics (``schemas/hub/*.avsc``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from schemas.catalog import EventType, load_catalog
from schemas.compat import check_catalog
from schemas.hub_formats import hub_format, hub_formats


def register(subparsers: Any) -> None:
    """Add the ``schemas`` command group (list, show, check) to the ``leadhub`` parser."""
    parser = subparsers.add_parser(
        "schemas",
        help="inspect and check the Avro event catalog",
        description=(
            "The event catalog: one Avro schema per event type and version in schemas/avro. "
            "Partners in any language publish from these files; every version stays so old "
            "messages decode by fingerprint."
        ),
    )
    commands = parser.add_subparsers(dest="schemas_command", metavar="SUBCOMMAND", required=True)
    dir_help = "catalog directory to use instead of the packaged schemas/avro"

    list_parser = commands.add_parser(
        "list",
        help="list every event type and version with fingerprint, emitters and categories",
        description=(
            "One line per event type and version: type, version, CRC-64-AVRO fingerprint (the 8 "
            "bytes after C3 01 on the wire, in hex: the hex of the little-endian bytes, not of "
            "the CRC's numeric value), the roles that may emit it, and every data category its "
            "events can carry. Then, in a section of their own, the Avro formats of the hub's "
            "own topics (lead.events), which the hub writes and partners never publish. "
            "docs/wire-format.md describes every byte."
        ),
    )
    list_parser.add_argument(
        "--json", action="store_true",
        help="print a JSON array of the event types instead (the hub formats are not in it)")
    list_parser.add_argument("--dir", type=Path, help=dir_help)
    list_parser.set_defaults(handler=list_schemas)

    show_parser = commands.add_parser(
        "show",
        help="print the .avsc of one event type (or of a hub topic format)",
        description=(
            "Print the Avro schema file (.avsc) of TYPE, the latest version by default. TYPE may "
            "also name a hub topic format listed by `leadhub schemas list` (CanonicalRecord)."
        ),
    )
    show_parser.add_argument("type", metavar="TYPE", help="event type name, e.g. ReferralMade")
    show_parser.add_argument(
        "--version", type=int, metavar="N", help="schema version (default: the latest)"
    )
    show_parser.add_argument("--dir", type=Path, help=dir_help)
    show_parser.set_defaults(handler=show_schema)

    check_parser = commands.add_parser(
        "check",
        help="lint the catalog and check compatibility between versions (exit 1 on problems)",
        description=(
            "Check every schema file: envelope shape, a doc on every type and field, known "
            "emitters and data categories, value_categories on enums only, and that each version "
            "is backward and forward compatible with the previous one. Exits 0 when clean, 1 "
            "with the list of problems otherwise."
        ),
    )
    check_parser.add_argument("--dir", type=Path, help=dir_help)
    check_parser.set_defaults(handler=check_schemas)


def _categories(event_type: EventType) -> list[str]:
    found = {event_type.category}
    for spec in event_type.fields:
        if spec.category:
            found.add(spec.category)
        found.update(spec.value_categories.values())
    return sorted(found)


def list_schemas(args: argparse.Namespace) -> int:
    """Print the catalog's type versions (text table or ``--json``); return 0."""
    catalog = load_catalog(args.dir)
    rows: list[dict[str, Any]] = [
        {
            "type": et.name,
            "version": et.version,
            "fingerprint": et.fingerprint,
            "path": str(et.path),
            "emitters": sorted(et.emitters),
            "categories": _categories(et),
        }
        for et in catalog.all_versions()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["type"]) for row in rows)
    print("event types (partners publish these to lead.in.<partner id>):")
    for row in rows:
        print(
            f"{row['type']:<{width}}  v{row['version']:<3} {row['fingerprint']}  "
            f"emitters={','.join(row['emitters'])}  categories={','.join(row['categories'])}"
        )
    print()
    print("hub topics (written by the hub only; partners never publish these):")
    for hub in hub_formats():
        print(f"{hub.name:<{width}}  {hub.topic:<12} {hub.fingerprint}  "
              f"schemas/{hub.path.parent.name}/{hub.path.name}")
    return 0


def show_schema(args: argparse.Namespace) -> int:
    """Print the ``.avsc`` text of one type version; return 0 (unknown type: a HubError)."""
    hub = hub_format(args.type) if args.dir is None and args.version is None else None
    if hub is not None:
        sys.stdout.write(hub.path.read_text(encoding="utf-8"))
        return 0
    catalog = load_catalog(args.dir)
    if args.version is None:
        event_type = catalog.latest(args.type)
    else:
        event_type = catalog.get(args.type, args.version)
    sys.stdout.write(event_type.path.read_text(encoding="utf-8"))
    return 0


def check_schemas(args: argparse.Namespace) -> int:
    """Print every catalog problem; return 1 if there is any, else 0."""
    problems = check_catalog(args.dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in the event catalog", file=sys.stderr)
        return 1
    print("event catalog OK")
    return 0
