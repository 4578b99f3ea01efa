"""Errors of the composition layer (``leadhub``) that no deeper layer owns.

They live in this small module, not beside the code that raises them, so the CLI's table of
exit codes (``leadhub.cli.exit_code_for``) can name them without importing the demo.
"""

from __future__ import annotations

from schemas.errors import HubError


class UsageError(HubError):
    """A command was asked for what the site file or the caller's credential rules out.

    An unknown partner, another partner's purpose, a credential that already exists (or not
    yet): nothing failed, the command must be asked differently.
    """


class DemoSetupError(HubError):
    """The demo cannot start (a port is taken, the API did not come up)."""
