"""``leadhub keys create|list|revoke|rotate`` and ``leadhub serve`` (the HTTP API)."""

from __future__ import annotations

import argparse
import gc
import json
import socket
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
    serve.add_argument("--workers", type=int, default=1,
                       help="uvicorn worker processes (default 1); each has its own "
                            "database pool and audit producer")
    serve.set_defaults(handler=_serve)


def api_config(settings: Settings) -> Any:
    """The API's config from the hub's settings."""
    from consumers.api.context import ApiConfig
    from leadhub.kafka_credentials import kafka_connection

    return ApiConfig(database_url=settings.view_database_url,
                     kafka=kafka_connection(settings, "api"),
                     topic_prefix=settings.topic_prefix,
                     accounts_database_url=settings.accounts_database_url)


def _store(settings: Settings) -> Any:
    from sqlalchemy import create_engine

    from consumers.api.accounts import adopt_from_view, open_accounts
    from consumers.api.auth import CredentialStore
    from processors.site import load_site

    accounts = open_accounts(settings.accounts_database_url)
    view = create_engine(settings.view_database_url)
    try:
        adopt_from_view(accounts, view)  # keys an older leadhub kept in the view, once
    finally:
        view.dispose()
    return CredentialStore(accounts, load_site(settings.site_file))


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


def app_factory() -> Any:
    """Build the API app from the environment (``LEADHUB_*``): uvicorn calls this in each
    worker process, and tune the cyclic GC for serving (see :func:`tune_gc`)."""
    from consumers.api.app import create_api
    from processors.site import load_site

    settings = load_settings()
    app = create_api(api_config(settings), site=load_site(settings.site_file))
    tune_gc()
    return app


#: Full (generation 2) collections only after this many generation-1 collections (CPython's
#: default is 10): about one a minute at 50 requests/s instead of about one a second.
GC_FULL_EVERY = 1000


def tune_gc() -> None:
    """Keep the cyclic GC's full collections out of request latency.

    A request's objects (parsed view rows, the access record) are acyclic and freed by
    reference counting; what the cyclic GC sees of them is a caseload page's ~2,500 dicts
    and lists alive at once, which trigger young collections (cheap, <1 ms) and, with the
    default thresholds, a full collection about every second. A full collection took up to
    45 ms under load and was the caseload's p99 (measured: caseload p99 91 ms -> 18 ms at
    50 requests/s). So: move the startup heap (catalog, SQLAlchemy, FastAPI) out of the
    collector's reach (``gc.freeze``) and make full collections rare; young collections
    keep their default threshold, so cyclic garbage is still reclaimed.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, GC_FULL_EVERY)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers == 1:  # build here, so a startup error is reported like any other
        uvicorn.run(app_factory(), host=args.host, port=args.port, log_level="info",
                    access_log=False)
        return 0
    from uvicorn.supervisors import Multiprocess

    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    config = uvicorn.Config("leadhub.cli_api:app_factory", factory=True, host=args.host,
                            port=args.port, workers=args.workers, log_level="info",
                            access_log=False)
    print(f"serving on http://{args.host}:{args.port} with {args.workers} workers",
          file=sys.stderr)
    Multiprocess(config, sockets=[sock]).run()
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn's worker processes, created as ``IPPROTO_TCP``.

    uvicorn's own ``bind_socket`` creates it with protocol 0; asyncio then does not set
    ``TCP_NODELAY`` on the accepted connections (it checks the protocol), and Nagle's
    algorithm meeting the client's delayed ACK adds ~40 ms to each keep-alive response
    (measured: p50 of 47 ms instead of 5 ms at 50 requests/s with 2 workers).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
