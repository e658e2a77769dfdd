"""Fixtures of the API tests: stores on SQLite and PostgreSQL, a test clock, apps."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, make_url, text

from api.app import create_app
from api.security import OPERATOR, ROLES, create_key
from api.store import SqlStore
from api.tables import Base
from dowguard.config import Settings

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
