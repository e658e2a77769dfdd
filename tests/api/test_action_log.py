"""The ActionLog contract, run against the in-memory log and the SQL log.

Each contract test takes the ``log`` fixture, parametrised over the memory
log and the SQL log on every database backend; the tests after them cover
what only the SQL log does (the function's latest action, the paged trail).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.store import ActionQuery, SqlActionLog, SqlStore
from detector.enforcement.audit import (
    ATTEMPTING,
    PENDING_APPROVAL,
    SUCCEEDED,
    THROTTLE,
    ActionLog,
    ActionRecord,
    MemoryActionLog,
    new_action_id,
)
from dowguard.errors import StorageError
from ingest.events import Context
from tests.api.conftest import BACKENDS, fresh_database

CTX = Context("aws", "111122223333", "us-east-1", "resize")
OTHER = Context("aws", "111122223333", "us-east-1", "thumbs")


def _rec(key: str, ctx: Context = CTX, at: float = 100.0) -> ActionRecord:
    return ActionRecord(
        id=new_action_id(),
        key=key,
        fingerprint="f" * 16,
        context=ctx,
        verb=THROTTLE,
        hook="dry_run",
        state=ATTEMPTING,
        reason="cost spike",
        created_at=at,
        updated_at=at,
        previous={"reserved": None},
    )


@pytest.fixture(params=["memory", *BACKENDS])
def log(request: pytest.FixtureRequest) -> Iterator[ActionLog]:
    if request.param == "memory":
        yield MemoryActionLog()
        return
    store = SqlStore(fresh_database(request.param, request))
    yield SqlActionLog(store)
    store.close()


def test_record_refuses_a_second_record_with_the_same_key(log: ActionLog) -> None:
    assert log.record(_rec("k1"))
    assert not log.record(_rec("k1"))
    assert len(log.find()) == 1


def test_a_reused_id_is_an_error(log: ActionLog) -> None:
    first = _rec("k1")
    log.record(first)
    again = _rec("k2")
    again.id = first.id
    with pytest.raises(StorageError, match="already stored"):
        log.record(again)


def test_update_replaces_the_stored_record(log: ActionLog) -> None:
    rec = _rec("k1")
    log.record(rec)
    rec.state = SUCCEEDED
    rec.attempts = 2
    rec.outcome = {"answer": {"status": 200}}
    stored = log.get(rec.id)
    assert stored is not None and stored.state == ATTEMPTING
    log.update(rec)
    got = log.get(rec.id)
    assert got == rec
    assert got is not rec


def test_records_read_back_are_copies(log: ActionLog) -> None:
    rec = _rec("k1")
    rec.outcome = {"answer": {"status": 200}}
    log.record(rec)
    rec.outcome["answer"]["status"] = 404
    got = log.get(rec.id)
    assert got is not None and got.outcome["answer"]["status"] == 200
    got.outcome["answer"]["status"] = 500
    (found,) = log.find()
    assert found.outcome["answer"]["status"] == 200


def test_update_checks_id_and_key(log: ActionLog) -> None:
    with pytest.raises(StorageError, match="no record"):
        log.update(_rec("k1"))
    rec = _rec("k1")
    log.record(rec)
    rec.key = "k2"
    with pytest.raises(StorageError, match="has key"):
        log.update(rec)


def test_find_filters_and_orders_oldest_first(log: ActionLog) -> None:
    late = _rec("k3", OTHER, at=300.0)
    early = _rec("k1", CTX, at=100.0)
    mid = _rec("k2", CTX, at=200.0)
    mid.state = PENDING_APPROVAL
    for rec in (late, early, mid):
        log.record(rec)
    assert [r.key for r in log.find()] == ["k1", "k2", "k3"]
    assert [r.key for r in log.find(context=CTX)] == ["k1", "k2"]
    assert [r.key for r in log.find(state=PENDING_APPROVAL)] == ["k2"]
    assert [r.key for r in log.find(since=200.0)] == ["k2", "k3"]
    assert [r.key for r in log.find(context=CTX, state=ATTEMPTING)] == ["k1"]
    assert log.find(fingerprint="0" * 16) == []
    assert log.get("missing") is None


def test_the_function_shows_its_latest_action(store: SqlStore) -> None:
    log = SqlActionLog(store)
    rec = _rec("k1")
    log.record(rec)
    row, _ = store.get_function("/".join(CTX))
    assert (row.enforcement_verb, row.enforcement_state) == (THROTTLE, ATTEMPTING)
    rec.state = SUCCEEDED
    rec.updated_at = 150.0
    log.update(rec)
    row, _ = store.get_function("/".join(CTX))
    assert (row.enforcement_state, row.enforcement_at) == (SUCCEEDED, 150.0)
    assert row.enforcement_action_id == rec.id


def test_the_audit_trail_pages_newest_first(store: SqlStore) -> None:
    log = SqlActionLog(store)
    for i in range(7):
        log.record(_rec(f"k{i}", at=100.0 + i))
    keys: list[str] = []
    cursor = None
    while True:
        page = store.list_actions(ActionQuery(limit=3, cursor=cursor))
        assert page.count == 7
        keys += [r.key for r in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert keys == [f"k{i}" for i in reversed(range(7))]


def test_to_json_names_the_context_fields() -> None:
    data = _rec("k1").to_json()
    assert data["context"] == CTX._asdict()
    assert (data["verb"], data["key"]) == (THROTTLE, "k1")
