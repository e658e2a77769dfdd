"""The ``serve`` and ``keys`` subcommands of ``dowguard``.

``dowguard keys create`` writes the new key alone on standard output, so a
script can capture it; everything else it says goes to standard error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api.security import ROLES, create_key
from api.store import SqlActionLog, SqlStore
from dowguard.config import Settings, load_settings
from dowguard.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

#: How ``serve --workers`` hands its settings to the worker processes.
WORKER_SETTINGS_ENV = "DOWGUARD_SERVE_SETTINGS"


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``keys`` to the main command line."""
    serve = subparsers.add_parser(
        "serve",
        help="serve the REST API",
        description="Serve the alert API (and /metrics) with uvicorn.",
    )
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--database-url", help="SQLAlchemy URL")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (default 1)",
    )
    serve.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser(
        "keys", help="manage API keys", description="Create, list or revoke keys."
    )
    keys.add_argument("--database-url", help="SQLAlchemy URL")
    actions = keys.add_subparsers(metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", default="", help="who or what uses the key")
    create.set_defaults(func=cmd_keys_create)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.set_defaults(func=cmd_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", type=int, metavar="ID")
    revoke.set_defaults(func=cmd_keys_revoke)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        getattr(args, "config", None),
        database_url=getattr(args, "database_url", None),
        api_host=getattr(args, "host", None),
        api_port=getattr(args, "port", None),
    )


def _store(settings: Settings) -> SqlStore:
    store = SqlStore(settings.database_url)
    store.ensure_schema()
    return store


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.workers < 1:
        raise ConfigError(f"serve --workers: must be at least 1, got {args.workers}")
    serve(settings, args.workers)
    return 0


def serve(settings: Settings, workers: int = 1, **uvicorn_options: Any) -> None:
    """Serve the API with uvicorn until it is stopped.

    With several workers each is a process of its own that builds the app
    from the same settings; they share the database, so keys, silences and
    the enforcement audit trail (and with it the policy's limits) are one.
    """
    import uvicorn

    host, port = settings.api_host, settings.api_port
    logger.info("api serving host=%s port=%d workers=%d", host, port, workers)
    if workers == 1:
        app, close = _build_app(settings, _store(settings))
        try:
            uvicorn.run(app, host=host, port=port, **uvicorn_options)
        finally:
            close()
        return
    # The schema is brought up to date once, before the workers race for it.
    _store(settings).close()
    os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        **uvicorn_options,
    )


def worker_app() -> FastAPI:
    """The app of one ``serve --workers`` process, from the parent's settings."""
    settings = Settings.model_validate_json(os.environ[WORKER_SETTINGS_ENV])
    # Limitation: every worker re-sends open alerts, so Alertmanager gets them N times.
    app, _close = _build_app(settings, SqlStore(settings.database_url))
    return app


def _build_app(
    settings: Settings, store: SqlStore
) -> tuple[FastAPI, Callable[[], None]]:
    from api.alertmanager import build_forwarder
    from api.app import create_app
    from detector.enforcement.service import build_enforcer

    enforcer = build_enforcer(settings, SqlActionLog(store))
    forwarder = build_forwarder(settings, store)
    app = create_app(settings, store=store, enforcement=enforcer, forwarder=forwarder)

    def close() -> None:
        if forwarder is not None:
            forwarder.close()
        store.close()

    return app, close


def cmd_keys_create(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        key = create_key(store, args.role, args.name)
    finally:
        store.close()
    sys.stderr.write(f"dowguard: new {args.role} key (shown only this once):\n")
    sys.stdout.write(key + "\n")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        rows = store.list_api_keys()
    finally:
        store.close()
    for row in rows:
        status = "revoked" if row.revoked else "active"
        sys.stdout.write(f"{row.id}\t{row.role}\t{status}\t{row.name}\n")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        row = store.revoke_api_key(args.key_id)
    finally:
        store.close()
    sys.stderr.write(f"dowguard: revoked key {row.id} ({row.name})\n")
    return 0
