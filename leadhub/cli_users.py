"""``leadhub users create|list|disable|reset-password``: staff users of the console."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from leadhub.settings import load_settings


def register(subparsers: Any) -> None:
    """Add the ``users`` command group."""
    users = subparsers.add_parser(
        "users", help="manage staff users of the console (leadhub serve, /)",
        description="Manage staff users of the web console, kept in the accounts database. "
                    "Passwords are stored as argon2id hashes; a new password (and, where the "
                    "site file requires it for the user's role or --totp is given, a TOTP "
                    "secret for an authenticator app) is printed once.")
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a user; prints the password once")
    create.add_argument("user", help="user name (letters, digits, . _ @ -)")
    create.add_argument("--partner", required=True, help="partner id from the site file")
    create.add_argument("--totp", action="store_true",
                        help="also give a TOTP second factor (always for roles that need it)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input instead of making one")
    create.add_argument("--name", help="display name: the name CaseManagerAssigned events give "
                                       "this user (the caseload's 'assigned to me' matches it; "
                                       "the user name when there is none)")
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="list users (never passwords or secrets)")
    listing.add_argument("--json", action="store_true", help="JSON array")
    listing.set_defaults(handler=_list)
    naming = actions.add_parser("set-name", help="set or clear a user's display name")
    naming.add_argument("user")
    naming.add_argument("name", help="display name ('' clears it)")
    naming.set_defaults(handler=_set_name)
    disable = actions.add_parser("disable", help="disable a user and end their sessions")
    disable.add_argument("user")
    disable.set_defaults(handler=_disable)
    reset = actions.add_parser("reset-password",
                               help="new password, unlock, end sessions; prints it once")
    reset.add_argument("user")
    reset.add_argument("--new-totp", action="store_true", help="also replace the TOTP secret")
    reset.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input instead of making one")
    reset.set_defaults(handler=_reset)


def _users() -> Any:
    from consumers.api.accounts import open_accounts
    from consumers.console.users import StaffUsers
    from processors.site import load_site

    settings = load_settings()
    return StaffUsers(open_accounts(settings.accounts_database_url),
                      load_site(settings.site_file))


def _password(args: argparse.Namespace) -> str | None:
    return sys.stdin.readline().rstrip("\n") if args.password_stdin else None


def _print_issued(issued: Any) -> None:
    user = issued.user
    print(f"user: {user.user_name}\npartner: {user.partner}", file=sys.stderr)
    print("password (shown once; hand it over safely):", file=sys.stderr)
    print(issued.password)
    if issued.totp_secret is not None:
        print("TOTP secret for the authenticator app (shown once):", file=sys.stderr)
        print(issued.totp_secret)
        print(issued.totp_uri)


def _create(args: argparse.Namespace) -> int:
    _print_issued(_users().create(args.user, args.partner, totp=args.totp,
                                  password=_password(args), display_name=args.name))
    return 0


def _set_name(args: argparse.Namespace) -> int:
    user = _users().set_display_name(args.user, args.name)
    print(f"{user.user_name}: display name {user.display_name or '(none: the user name)'}")
    return 0


def _reset(args: argparse.Namespace) -> int:
    _print_issued(_users().reset_password(args.user, new_totp=args.new_totp,
                                          password=_password(args)))
    return 0


def _disable(args: argparse.Namespace) -> int:
    user = _users().disable(args.user)
    print(f"disabled {user.user_name} ({user.partner}); their sessions are ended")
    return 0


def _list(args: argparse.Namespace) -> int:
    users = _users().list()
    if args.json:
        json.dump([u.to_json() for u in users], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for u in users:
        state = "disabled" if u.disabled else "locked" if u.locked else "active"
        print(f"{u.user_name:20} {u.partner:20} {'totp' if u.has_totp else '-':5} {state:8} "
              f"{u.display_name or ''}".rstrip())
    print(f"{len(users)} users", file=sys.stderr)
    return 0
