"""The account shares table: written with each checkpoint, in its transaction,
replaced per partition, read back per consumer group, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from api.store import SqlStore
from detector.alerts import AccountAlert, Checkpoint, StoredShare
from dowguard.errors import StorageError

DAY_END = 1_772_496_000.0
MONTH_START = 1_769_904_000.0
MONTH_END = 1_772_323_200.0 + 31 * 86_400.0


def share(
    partition: int,
    account: str = "111122223333",
    cost: float = 1.25,
    alert: AccountAlert | None = None,
) -> StoredShare:
    return StoredShare(
        partition,
        "aws",
        account,
        DAY_END,
        cost,
        MONTH_START,
        MONTH_END,
        cost * 3,
        DAY_END - 1200.0,
        (0.125, 0.0, 0.375),
        DAY_END - 86_400.0,
        DAY_END - 1000.0,
        alert,
    )


def checkpoint(partition: int, *shares: StoredShare) -> Checkpoint:
    return Checkpoint(partition, b"state", {"inv": 7}, shares)


def test_shares_are_stored_with_their_checkpoint(store: SqlStore) -> None:
    alert = AccountAlert(3, True, DAY_END - 5000.0, 0.75)
    stored = [share(0, alert=alert), share(0, "444455556666", 2.5), share(1)]
    store.commit([], {0: checkpoint(0, *stored[:2]), 1: checkpoint(1, stored[2])}, "g")
    assert sorted(store.load_shares("g"), key=lambda s: (s.partition, s.account)) == (
        stored
    )
    assert store.load_shares("other") == []


def test_a_checkpoint_replaces_its_partitions_shares_only(store: SqlStore) -> None:
    store.commit([], {0: checkpoint(0, share(0), share(0, "444455556666"))}, "g")
    store.commit([], {1: checkpoint(1, share(1))}, "g")
    store.commit([], {0: checkpoint(0, share(0, cost=4.0))}, "g")
    store.commit([], {0: checkpoint(0, share(0, cost=9.0))}, "h")
    found = {(s.partition, s.account): s.day_cost for s in store.load_shares("g")}
    assert found == {(0, "111122223333"): 4.0, (1, "111122223333"): 1.25}
    store.commit([], {1: checkpoint(1)}, "g")
    assert [s.partition for s in store.load_shares("g")] == [0]
    assert [s.day_cost for s in store.load_shares("h")] == [9.0]


def test_shares_roll_back_with_a_failed_checkpoint(store: SqlStore) -> None:
    store.commit([], {0: checkpoint(0, share(0))}, "g")
    bad = Checkpoint(1, None, {}, (share(1),))  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        store.commit([], {0: checkpoint(0, share(0, cost=8.0)), 1: bad}, "g")
    assert [(s.partition, s.day_cost) for s in store.load_shares("g")] == [(0, 1.25)]


def test_the_migration_adds_the_table_to_a_database_of_the_last_revision(
    tmp_path: object,
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path}/old.db")
    store.upgrade("0002")
    assert "account_shares" not in inspect(store.engine).get_table_names()
    store.ensure_schema()
    store.commit([], {2: checkpoint(2, share(2))}, "g")
    assert [s.partition for s in store.load_shares("g")] == [2]
    store.close()
