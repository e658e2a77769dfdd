"""The in-memory action log keeps keys unique and returns copies."""

from __future__ import annotations

import pytest

from detector.enforcement.audit import (
    ATTEMPTING,
    SUCCEEDED,
    THROTTLE,
    ActionRecord,
    MemoryActionLog,
    new_action_id,
)
from dowguard.errors import StorageError
from ingest.events import Context

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
        reason="test",
        created_at=at,
        updated_at=at,
    )


def test_record_refuses_a_second_record_with_the_same_key() -> None:
    log = MemoryActionLog()
    assert log.record(_rec("k1"))
    assert not log.record(_rec("k1"))
    assert len(log.find()) == 1


def test_update_replaces_and_get_returns_a_copy() -> None:
    log = MemoryActionLog()
    rec = _rec("k1")
    log.record(rec)
    rec.state = SUCCEEDED
    rec.outcome["answer"] = {"status": 200}
    assert log.get(rec.id).state == ATTEMPTING  # type: ignore[union-attr]
    log.update(rec)
    got = log.get(rec.id)
    assert got is not None and got.state == SUCCEEDED
    got.outcome["answer"]["status"] = 500
    again = log.get(rec.id)
    assert again is not None and again.outcome["answer"]["status"] == 200


def test_update_of_an_unknown_id_raises() -> None:
    with pytest.raises(StorageError, match="no record"):
        MemoryActionLog().update(_rec("k1"))


def test_find_filters_and_orders_by_creation() -> None:
    log = MemoryActionLog()
    late, early, other = _rec("a", at=200.0), _rec("b", at=50.0), _rec("c", OTHER)
    for rec in (late, early, other):
        log.record(rec)
    assert [r.key for r in log.find(context=CTX)] == ["b", "a"]
    assert [r.key for r in log.find(since=100.0)] == ["c", "a"]
    assert log.find(state=SUCCEEDED) == []
    assert [r.key for r in log.find(context=OTHER, state=ATTEMPTING)] == ["c"]


def test_to_json_names_context_fields() -> None:
    data = _rec("k1").to_json()
    assert data["context"]["function"] == "resize"
    assert data["verb"] == THROTTLE
