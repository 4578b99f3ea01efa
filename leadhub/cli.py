"""The ``leadhub`` command line: the composition root's entry point.

Each command group lives in its own ``leadhub.cli_*`` module exposing
``register(subparsers) -> None``; this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from collections.abc import Mapping, Sequence

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

#: The exit codes README "Every command has --help" documents.
EXIT_OK = 0
#: A failure: something went wrong, or a check (compare, reconcile, verify) found a problem.
EXIT_FAILURE = 1
#: A setup or usage error: the caller fixes a setting, a file, an install or the command line.
EXIT_USAGE = 2
#: ``audit replay`` gave an empty view, or ``audit export`` found no record in its window.
EXIT_EMPTY = 3
#: Interrupted (Ctrl-C), as a shell reports SIGINT.
EXIT_INTERRUPTED = 130


@functools.cache
def exit_codes() -> Mapping[type[HubError], int]:
    """The exit code of each error class that is not a plain failure; subclasses inherit it.

    The one place errors meet exit codes: the error classes carry none. The classes are
    imported here, once a command has failed, so a command that succeeds never imports the
    simulator just to name its error.
    """
    from consumers.audit.errors import EmptyWindowError, SetupError
    from consumers.errors import ProjectionVersionMismatch
    from leadhub.errors import DemoSetupError, UsageError
    from leadhub.services import PrerequisiteMissing
    from leadhub.settings import SettingsError
    from processors.errors import SiteError
    from producers.simulator import SimulationError

    return {
        SettingsError: EXIT_USAGE,
        SiteError: EXIT_USAGE,
        UsageError: EXIT_USAGE,
        PrerequisiteMissing: EXIT_USAGE,
        SetupError: EXIT_USAGE,
        ProjectionVersionMismatch: EXIT_USAGE,
        SimulationError: EXIT_USAGE,
        DemoSetupError: EXIT_USAGE,
        EmptyWindowError: EXIT_EMPTY,
    }


def exit_code_for(error_type: type[HubError]) -> int:
    """The exit code of the nearest class of ``error_type``'s MRO that :func:`exit_codes` lists;
    :data:`EXIT_FAILURE` if it lists none."""
    table = exit_codes()
    for cls in error_type.__mro__:
        if cls in table:
            return table[cls]
    return EXIT_FAILURE


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
    """Run the CLI; return the process exit code (0 ok, 1 failure, 2 usage/setup error, 3 an
    empty audit window, 130 interrupted); a HubError's code comes from :func:`exit_code_for`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except HubError as exc:
        print(f"leadhub: error: {exc}", file=sys.stderr)
        return exit_code_for(type(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
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
