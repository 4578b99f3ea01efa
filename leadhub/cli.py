"""The ``leadhub`` command line: the composition root's entry point.

Each command group lives in its own ``leadhub.cli_*`` module exposing
``register(subparsers) -> None``; this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from schemas.errors import HubError

#: Modules that contribute sub-commands; each has ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "leadhub.cli_services",
    "leadhub.cli_pipeline",
    "leadhub.cli_partners",
    "leadhub.cli_schemas",
    "leadhub.cli_policy",
    "leadhub.cli_audit",
    "leadhub.cli_api",
    "leadhub.cli_users",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the full ``leadhub`` argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="leadhub",
        description=(
            "leadhub: consent-filtered, event-driven data sharing for pre-booking diversion "
            "programs (LEAD). Kafka is the system of record; every view is derived."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code (0 ok, 1 failure, 2 usage/setup error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except HubError as exc:
        print(f"leadhub: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_FAILURE))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("LEADHUB_DEBUG"):
            raise
        print(
            f"leadhub: unexpected error ({type(exc).__name__}); this is a bug — rerun with "
            "LEADHUB_DEBUG=1 to see the traceback and report it",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return result


if __name__ == "__main__":
    sys.exit(main())
