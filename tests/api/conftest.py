"""Fixtures of the API tests: stores on SQLite and PostgreSQL, a test clock, apps."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from api.app import create_app
from api.security import OPERATOR, ROLES, create_key
from api.store import SqlStore
from api.tables import Base
from dowguard.config import Settings
from tests.conftest import unavailable
from tests.processes import free_port, stop_process

with warnings.catch_warnings():
    # Starlette's test client now prefers the httpx2 package and warns when
    # it runs on httpx; it works the same on both.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def scratch_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of its own on the test server, dropped at the end.

    Other tests share the server's database; this one keeps the API tests'
    truncations away from them.
    """
    name = f"dowguard_api_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    schema = SqlStore(rendered)
    schema.upgrade()
    schema.close()
    yield rendered
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fresh_database(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database with the schema on ``backend``."""
    if backend == "sqlite":
        tmp = request.getfixturevalue("tmp_path_factory")
        url = f"sqlite:///{tmp.mktemp('db') / 'dowguard.db'}"
        store = SqlStore(url)
        store.upgrade()
        store.close()
        return url
    url = str(request.getfixturevalue("scratch_postgres_url"))
    engine = create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names}"))
    engine.dispose()
    return url


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database with the schema, on each backend."""
    return fresh_database(request.param, request)


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[SqlStore]:
    s = SqlStore(db_url, clock=clock)
    yield s
    s.close()


@dataclass
class Api:
    """An app over a fresh store, a client, and one key per role."""

    client: TestClient
    store: SqlStore
    clock: FakeClock
    keys: dict[str, str]

    def auth(self, role: str = OPERATOR) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def make_api(
    store: SqlStore, clock: FakeClock, settings: Settings | None = None
) -> Api:
    keys = {role: create_key(store, role, f"{role}-test") for role in ROLES}
    app = create_app(settings or Settings(), store=store)
    return Api(TestClient(app), store, clock, keys)


@pytest.fixture
def api(tmp_path_factory: pytest.TempPathFactory, clock: FakeClock) -> Iterator[Api]:
    """The API over an SQLite file, with a key per role."""
    path = tmp_path_factory.mktemp("api") / "dowguard.db"
    store = SqlStore(f"sqlite:///{path}", clock=clock)
    store.upgrade()
    made = make_api(store, clock)
    with made.client:
        yield made
    store.close()


class WebhookReceiver:
    """Collects what Alertmanager's webhook notifier posts, on loopback."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver.changed:
                    receiver.payloads.append(body)
                    receiver.changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first notified alert that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for payload in self.payloads:
                    for alert in payload.get("alerts", []):
                        if predicate(alert):
                            return dict(alert)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such notification in {self.payloads}")
                self.changed.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Alertmanager:
    url: str
    webhook: WebhookReceiver


ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """A real prometheus-alertmanager on loopback, notifying a local webhook.

    Every alert is its own group and notifications go out after a second, so
    the tests see both the firing and the resolved notification.
    """
    if not os.path.exists(ALERTMANAGER_BIN):
        unavailable("Alertmanager", "apt-get install -y prometheus-alertmanager")
    webhook = WebhookReceiver()
    work = tmp_path_factory.mktemp("alertmanager")
    config = work / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: ['...']\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: {webhook.url}\n"
        "        send_resolved: true\n"
    )
    port = free_port()
    log = open(work / "alertmanager.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            ALERTMANAGER_BIN,
            f"--config.file={config}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, work / "alertmanager.log")
        yield Alertmanager(url, webhook)
    finally:
        stop_process(proc)
        log.close()
        webhook.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            unavailable("Alertmanager", f"exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    unavailable("Alertmanager", f"not ready after 30s: {log.read_text()[-2000:]}")
