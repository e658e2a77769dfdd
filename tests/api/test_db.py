"""SQLite shared by two writers (the daemon and the API) without lock errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text

from api import db
from api.store import AlertQuery, SqlStore
from detector.alerts import OPENED, UPDATED, Transition, fingerprint
from ingest.events import Context

CTX = Context("aws", "111122223333", "us-east-1", "resize")


def _transition(seq: int, function: str) -> Transition:
    ctx = CTX._replace(function=function)
    return Transition(
        event=OPENED if seq == 1 else UPDATED,
        fingerprint=fingerprint(ctx, "cost_spike"),
        kind="cost_spike",
        severity="critical",
        context=ctx,
        starts_at=1000.0,
        at=1000.0 + seq,
        seq=seq,
        cost_usd=float(seq),
    )


def test_writes_take_the_lock_at_begin_and_reads_take_none(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'd.db'}")
    store.create_all()
    begins: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    store.commit([_transition(1, "a")])
    store.list_alerts(AlertQuery())
    assert begins == ["BEGIN IMMEDIATE"]
    store.close()


def test_two_stores_write_one_file_concurrently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    daemon, api = SqlStore(url), SqlStore(url)
    daemon.create_all()
    daemon.commit([_transition(1, f"fn{i}") for i in range(10)])
    failures: list[BaseException] = []
    rounds = 40

    def detect() -> None:
        try:
            for seq in range(2, rounds + 2):
                daemon.commit([_transition(seq, f"fn{seq % 10}")])
        except BaseException as exc:
            failures.append(exc)

    def people() -> None:
        try:
            for i in range(rounds):
                fp = _transition(1, f"fn{i % 10}").fingerprint
                api.add_comment(fp, "alice", f"note {i}")
                api.acknowledge(fp, "alice")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=detect), threading.Thread(target=people)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert api.list_alerts(AlertQuery(states=("acknowledged",))).count == 10
    comments = sum(
        len(api.get_alert(_transition(1, f"fn{i}").fingerprint).comments)
        for i in range(10)
    )
    assert comments == rounds
    daemon.close()
    api.close()


@pytest.mark.postgres
def test_a_pooled_connection_killed_while_idle_is_replaced_unnoticed(
    scratch_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = scratch_postgres_url
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    engine = db.make_engine(db_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with create_engine(db_url).connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # Without the ping the pool would hand out the dead connection.
        with engine.connect() as conn:
            again = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert again != pid
    finally:
        engine.dispose()
