"""``leadhub keys create|list|revoke|rotate`` and ``leadhub serve`` (the HTTP API)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from typing import Any

from leadhub.settings import Settings, load_settings


def register(subparsers: Any) -> None:
    """Add the API commands."""
    keys = subparsers.add_parser(
        "keys", help="manage partner API keys and staff tokens",
        description="Manage credentials of the HTTP API, stored hashed in the view database. "
                    "A partner key (--kind partner) may only publish; a staff token "
                    "(--kind staff, with --user) may only read. Secrets are printed once.")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="issue a key; prints the secret once")
    create.add_argument("--partner", required=True, help="partner id from the site file")
    create.add_argument("--kind", required=True, choices=("partner", "staff"))
    create.add_argument("--user", help="staff user name (required for --kind staff)")
    create.set_defaults(handler=_keys_create)
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_keys_revoke)
    rotate = actions.add_parser("rotate", help="issue a new secret and revoke the old key")
    rotate.add_argument("key_id")
    rotate.set_defaults(handler=_keys_rotate)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="JSON array")
    listing.set_defaults(handler=_keys_list)

    serve = subparsers.add_parser(
        "serve", help="run the partner gateway and staff API (uvicorn)",
        description="Serve the HTTP API: POST /v1/events (partner keys), the staff query API "
                    "(staff tokens), OpenAPI docs at /docs. Uses LEADHUB_DATABASE_URL, "
                    "LEADHUB_KAFKA_BOOTSTRAP, LEADHUB_TOPIC_PREFIX and LEADHUB_SITE_FILE.")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.set_defaults(handler=_serve)


def api_config(settings: Settings) -> Any:
    """The API's config from the hub's settings."""
    from consumers.api.context import ApiConfig

    return ApiConfig(database_url=settings.view_database_url,
                     kafka_bootstrap=settings.effective_kafka_bootstrap,
                     topic_prefix=settings.topic_prefix)


def _store(settings: Settings) -> Any:
    from sqlalchemy import create_engine

    from consumers.api.app import open_schema
    from consumers.api.auth import CredentialStore
    from processors.site import load_site

    engine = create_engine(settings.view_database_url)
    open_schema(engine)
    return CredentialStore(engine, load_site(settings.site_file))


def _print_issued(issued: Any) -> None:
    info = issued.info
    print(f"key_id: {info.key_id}\nkind: {info.kind}\npartner: {info.partner}" +
          (f"\nuser: {info.user}" if info.user else ""), file=sys.stderr)
    print("secret (shown once; store it now):", file=sys.stderr)
    print(issued.secret)


def _keys_create(args: argparse.Namespace) -> int:
    store = _store(load_settings())
    _print_issued(store.create(args.partner, args.kind, args.user))
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    info = _store(load_settings()).revoke(args.key_id)
    print(f"revoked {info.key_id} ({info.kind} key of {info.partner})")
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    issued = _store(load_settings()).rotate(args.key_id)
    print(f"revoked {args.key_id}; replaced by {issued.info.key_id}", file=sys.stderr)
    _print_issued(issued)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    keys = _store(load_settings()).list()
    if args.json:
        json.dump([k.to_json() for k in keys], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for key in keys:
        state = "revoked" if key.revoked_at else "active"
        print(f"{key.key_id}  {key.kind:7}  {key.partner:20} {key.user or '-':16} {state}")
    print(f"{len(keys)} keys", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from consumers.api.app import create_api
    from processors.site import load_site

    settings = load_settings()
    app = create_api(api_config(settings), site=load_site(settings.site_file))
    # Move the startup heap (catalog, SQLAlchemy, FastAPI) out of the cyclic GC's reach, so
    # full collections stay short: without this they add ~25 ms to the p99 of a read.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0
