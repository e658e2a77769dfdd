"""Engines and sessions for SQLite and PostgreSQL, with SQLite set up to share.

SQLite is opened in WAL mode with a busy timeout; write transactions take the
write lock when they begin and reads run without one, so the daemon and the
API can share one file. Pooled server connections are checked after idling.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from dowguard.errors import ConfigError

logger = logging.getLogger(__name__)

#: Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
WRITE_OPTION = "dowguard_write"
#: How long a SQLite writer waits for the lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Connections a server-backed engine keeps open, and all it opens: a burst
#: beyond them waits for a connection rather than opening extra ones that
#: the pool closes again on return (a new PostgreSQL backend each time).
SERVER_POOL_SIZE = 8
#: A pooled server connection idle this long is pinged before it is used.
PING_AFTER_IDLE_S = 10.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; ``sqlite://`` alone is one shared in-memory DB."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database_url {url!r}: {exc}") from exc
    # JSON columns are read on every listing; orjson parses them faster.
    kwargs.setdefault("json_serializer", _dumps)
    kwargs.setdefault("json_deserializer", orjson.loads)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_size", SERVER_POOL_SIZE)
        kwargs.setdefault("max_overflow", 0)
        engine = create_engine(url, **kwargs)
        if not kwargs.get("pool_pre_ping"):
            _ping_when_idle(engine)
        return engine
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("check_same_thread", False)
    memory = parsed.database in (None, "", ":memory:")
    if memory:
        # Every session must see the same in-memory database.
        kwargs.setdefault("poolclass", StaticPool)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _tune_sqlite(engine, wal=not memory)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    # A ping before every checkout (pool_pre_ping) is one more round trip per
    # request; a connection in steady use is known to be alive. One that sat
    # idle may have been closed by the server, a proxy or a restart: it is
    # pinged, and on failure replaced before anyone uses it.
    # Limitation: after a server restart, one request on a busy pool fails (503).
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except engine.dialect.loaded_dbapi.Error as exc:
            logger.info("pooled connection dead after idling error=%s", exc)
            # The pool drops this connection and checks out another.
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _tune_sqlite(engine: Engine, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is turned off so that ours decides
        # whether a transaction takes the write lock up front.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes can fail at once
        # with SQLITE_BUSY when another process wrote meanwhile; busy_timeout
        # only helps if the lock is taken at BEGIN. Reads open no transaction
        # at all: each statement sees the latest commit, and a listing makes
        # two calls into SQLite instead of four (each call lets go of the
        # GIL, and under load getting it back is what a request waits for).
        if conn.get_execution_options().get(WRITE_OPTION, False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factories(
    engine: Engine,
) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    """Sessions for reading and for writing (the latter lock SQLite at BEGIN)."""
    read = sessionmaker(engine, expire_on_commit=False)
    write_engine = engine.execution_options(**{WRITE_OPTION: True})
    write = sessionmaker(write_engine, expire_on_commit=False)
    return read, write
