"""The SQL store: idempotent commits, the alert lifecycle, queries, migrations."""

from __future__ import annotations

import random

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from api.store import (
    ACKNOWLEDGED,
    OPEN,
    SILENCED,
    AlertQuery,
    ConflictError,
    InvalidCursorError,
    Matcher,
    NotFoundError,
    SqlStore,
)
from api.tables import RESOLVED, Base
from detector.alerts import (
    OPENED,
    UPDATED,
    Checkpoint,
    FunctionStatus,
    Transition,
    fingerprint,
)
from detector.alerts import (
    RESOLVED as RESOLVED_EVENT,
)
from dowguard.errors import StorageError
from ingest.events import Context
from tests.api.conftest import FakeClock

CTX = Context("aws", "111122223333", "us-east-1", "resize")


def transition(
    event: str = OPENED,
    seq: int = 1,
    ctx: Context = CTX,
    kind: str = "recursion",
    at: float = 1000.0,
    starts_at: float | None = None,
    cost: float = 1.25,
    severity: str = "critical",
) -> Transition:
    return Transition(
        event=event,
        fingerprint=fingerprint(ctx, kind),
        kind=kind,
        severity=severity,
        context=ctx,
        starts_at=at if starts_at is None else starts_at,
        at=at,
        seq=seq,
        cost_usd=cost,
        summary=f"{kind} on {ctx.function}",
        evidence={"hops": seq},
    )


def test_commit_stores_the_same_transition_once(store: SqlStore) -> None:
    t = transition()
    store.commit([t, t])
    store.commit([t])
    detail = store.get_alert(t.fingerprint)
    assert [r.seq for r in detail.transitions] == [1]
    page = store.list_alerts(AlertQuery())
    assert page.count == 1
    assert page.data[0].row.cost_usd == pytest.approx(1.25)


def test_commit_applies_opened_updated_resolved(store: SqlStore) -> None:
    store.commit([transition(OPENED, 1, at=1000.0)])
    store.commit([transition(UPDATED, 2, at=1010.0, starts_at=1000.0, cost=3.0)])
    row = store.get_alert(transition().fingerprint).view.row
    assert (row.status, row.cost_usd, row.ends_at) == ("firing", 3.0, None)
    assert row.labels["severity"] == "critical"
    assert row.labels["function"] == "resize"
    store.commit([transition(RESOLVED_EVENT, 3, at=1020.0, starts_at=1000.0)])
    detail = store.get_alert(row.fingerprint)
    assert detail.view.state == RESOLVED
    assert detail.view.row.ends_at == 1020.0
    assert detail.view.row.starts_at == 1000.0
    assert [r.event for r in detail.transitions] == [OPENED, UPDATED, RESOLVED_EVENT]


def test_a_late_older_transition_does_not_undo_a_newer_one(store: SqlStore) -> None:
    store.commit([transition(OPENED, 1), transition(RESOLVED_EVENT, 3, at=1030.0)])
    store.commit([transition(UPDATED, 2, at=1010.0, cost=9.0)])
    detail = store.get_alert(transition().fingerprint)
    assert detail.view.row.status == RESOLVED
    assert detail.view.row.cost_usd == pytest.approx(1.25)
    assert [r.seq for r in detail.transitions] == [1, 2, 3]


def test_an_update_with_an_earlier_start_moves_the_start(store: SqlStore) -> None:
    store.commit([transition(OPENED, 1, at=1000.0)])
    store.commit([transition(UPDATED, 2, at=1005.0, starts_at=960.0)])
    store.commit([transition(UPDATED, 3, at=1010.0, starts_at=990.0)])
    row = store.get_alert(transition().fingerprint).view.row
    assert row.starts_at == 960.0


def test_a_new_episode_resets_ack_and_times(store: SqlStore, clock: FakeClock) -> None:
    store.commit([transition(OPENED, 1, at=1000.0)])
    store.acknowledge(transition().fingerprint, "alice", "looking")
    store.commit([transition(RESOLVED_EVENT, 2, at=1100.0, starts_at=1000.0)])
    store.commit([transition(OPENED, 3, at=5000.0)])
    row = store.get_alert(transition().fingerprint).view.row
    assert (row.starts_at, row.ends_at, row.acked_at) == (5000.0, None, None)


def test_a_manual_resolve_holds_until_the_next_episode(store: SqlStore) -> None:
    fp = transition().fingerprint
    store.commit([transition(OPENED, 1)])
    view = store.resolve(fp, "bob", "known batch job")
    assert view.state == RESOLVED
    store.commit([transition(UPDATED, 2, at=1010.0, cost=5.0)])
    detail = store.get_alert(fp)
    assert detail.view.state == RESOLVED
    assert detail.view.row.cost_usd == 5.0
    assert [(c.action, c.author) for c in detail.comments] == [("resolve", "bob")]
    store.commit([transition(OPENED, 3, at=2000.0)])
    assert store.get_alert(fp).view.state == OPEN


def test_ack_of_a_resolved_alert_conflicts(store: SqlStore) -> None:
    store.commit([transition(OPENED, 1), transition(RESOLVED_EVENT, 2)])
    with pytest.raises(ConflictError, match="resolved"):
        store.acknowledge(transition().fingerprint, "alice")
    with pytest.raises(NotFoundError):
        store.acknowledge("0" * 16, "alice")


def test_commit_is_one_transaction(store: SqlStore) -> None:
    bad = Checkpoint(0, None, {"t": 1})  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        store.commit([transition()], {0: bad}, "g")
    assert store.list_alerts(AlertQuery()).count == 0
    assert store.load_checkpoint("g", 0) is None


def test_checkpoints_are_replaced_per_group_and_partition(store: SqlStore) -> None:
    store.commit([], {0: Checkpoint(0, b"a", {"inv": 3})}, "g1")
    store.commit([], {0: Checkpoint(0, b"b", {"inv": 7}), 1: Checkpoint(1, b"c", {})})
    store.commit([], {0: Checkpoint(0, b"d", {"inv": 9, "bill": 2})}, "g1")
    assert store.load_checkpoint("g1", 0) == Checkpoint(0, b"d", {"inv": 9, "bill": 2})
    assert store.load_checkpoint("", 0) == Checkpoint(0, b"b", {"inv": 7})
    assert store.load_checkpoint("g1", 1) is None


def test_update_functions_upserts_and_counts_firing_alerts(store: SqlStore) -> None:
    other = CTX._replace(function="thumbs")
    store.update_functions([FunctionStatus(CTX, 1.0, 2.0, 1.0, 10.0)])
    store.update_functions(
        [
            FunctionStatus(CTX, 2.0, 4.0, 1.0, 12.0),
            FunctionStatus(other, 2.0, 9.0, 1.0, 1.0),
        ]
    )
    store.commit([transition(ctx=CTX), transition(ctx=CTX, kind="cost_spike")])
    page = store.list_functions()
    assert page.count == 2
    assert [(r.function, r.cost_usd_per_hour, n) for r, n in page.data] == [
        ("thumbs", 9.0, 0),
        ("resize", 4.0, 2),
    ]
    row, open_alerts = store.get_function("/".join(CTX))
    assert (row.invocations_per_s, open_alerts) == (12.0, 2)


def _fill(store: SqlStore, n: int) -> list[Transition]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        ctx = Context("aws", rng.choice(["a1", "a2"]), "eu-west-1", f"fn{i}")
        out.append(
            transition(
                ctx=ctx,
                kind=rng.choice(["recursion", "cost_spike"]),
                severity=rng.choice(["warning", "critical"]),
                at=float(rng.randrange(1000, 1100)),
                cost=float(rng.randrange(0, 5)),
            )
        )
    store.commit(out)
    return out


@pytest.mark.parametrize("sort", ["starts_at", "cost_usd"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_cover_every_alert_once_in_order(
    store: SqlStore, sort: str, order: str
) -> None:
    _fill(store, 37)
    seen: list[tuple[float, int]] = []
    cursor = None
    for _ in range(10):
        page = store.list_alerts(
            AlertQuery(sort=sort, order=order, limit=8, cursor=cursor)
        )
        assert page.count == 37
        seen += [(getattr(v.row, sort), v.row.id) for v in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 37
    assert seen == sorted(seen, reverse=order == "desc")


def test_filters_select_exactly_the_matching_alerts(store: SqlStore) -> None:
    made = _fill(store, 40)
    expected = {
        t.fingerprint
        for t in made
        if t.context.account == "a1" and t.severity == "critical" and t.at >= 1050
    }
    page = store.list_alerts(
        AlertQuery(account="a1", severities=("critical",), since=1050.0, limit=500)
    )
    assert {v.row.fingerprint for v in page.data} == expected
    assert page.count == len(expected)
    one = made[3]
    page = store.list_alerts(
        AlertQuery(function=one.context.function, kinds=(one.kind,))
    )
    assert [v.row.fingerprint for v in page.data] == [one.fingerprint]


def test_a_cursor_only_works_with_its_own_sort(store: SqlStore) -> None:
    _fill(store, 5)
    page = store.list_alerts(AlertQuery(limit=2))
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursorError, match="made for sort"):
        store.list_alerts(AlertQuery(sort="cost_usd", cursor=page.next_cursor))
    with pytest.raises(InvalidCursorError, match="not a cursor"):
        store.list_alerts(AlertQuery(cursor="!!not-base64!!"))


def test_silences_derive_alert_states(store: SqlStore, clock: FakeClock) -> None:
    a = transition(ctx=CTX)
    b = transition(ctx=CTX._replace(function="thumbs"))
    c = transition(ctx=CTX._replace(function="other", account="999"))
    store.commit([a, b, c])
    store.acknowledge(c.fingerprint, "alice")
    silence = store.create_silence(
        [
            Matcher("function", "resize|thumbs", is_regex=True),
            Matcher("alertname", ".+", True),
        ],
        starts_at=clock.now + 60,
        ends_at=clock.now + 3600,
        created_by="alice",
        comment="maintenance",
    )
    states = {v.row.fingerprint: v.state for v in store.list_alerts(AlertQuery()).data}
    assert states == {
        a.fingerprint: OPEN,
        b.fingerprint: OPEN,
        c.fingerprint: ACKNOWLEDGED,
    }
    clock.advance(120)
    views = {v.row.fingerprint: v for v in store.list_alerts(AlertQuery()).data}
    assert views[a.fingerprint].state == SILENCED
    assert views[a.fingerprint].silenced_by == (silence.id,)
    assert views[c.fingerprint].state == ACKNOWLEDGED
    silenced = store.list_alerts(AlertQuery(states=(SILENCED,)))
    assert {v.row.fingerprint for v in silenced.data} == {a.fingerprint, b.fingerprint}
    opened = store.list_alerts(AlertQuery(states=(OPEN, ACKNOWLEDGED)))
    assert [v.row.fingerprint for v in opened.data] == [c.fingerprint]
    store.expire_silence(silence.id)
    assert store.list_alerts(AlertQuery(states=(SILENCED,))).count == 0
    assert store.list_silences("expired").data[0].id == silence.id


def test_negative_matchers_and_absent_labels(store: SqlStore, clock: FakeClock) -> None:
    a = transition(ctx=CTX)
    b = transition(ctx=CTX._replace(account="222"))
    store.commit([a, b])
    store.create_silence(
        [Matcher("account", "222", is_equal=False), Matcher("team", "")],
        clock.now - 1,
        clock.now + 10,
        "bob",
        "all but 222",
    )
    silenced = store.list_alerts(AlertQuery(states=(SILENCED,)))
    assert [v.row.fingerprint for v in silenced.data] == [a.fingerprint]
    store.create_silence([Matcher("team", "core")], clock.now, clock.now + 10, "b", "x")
    assert store.list_alerts(AlertQuery(states=(SILENCED,))).count == 1


def test_silence_list_by_state(store: SqlStore, clock: FakeClock) -> None:
    m = [Matcher("kind", "recursion")]
    pending = store.create_silence(m, clock.now + 10, clock.now + 20, "a", "p")
    active = store.create_silence(m, clock.now - 10, clock.now + 20, "a", "a")
    expired = store.create_silence(m, clock.now - 20, clock.now - 10, "a", "e")
    for state, row in [("pending", pending), ("active", active), ("expired", expired)]:
        assert [s.id for s in store.list_silences(state).data] == [row.id]
    assert store.list_silences().count == 3
    store.expire_silence(pending.id)
    assert store.list_silences("pending").count == 0


def test_migrations_build_the_schema_of_the_models(db_url: str) -> None:
    store = SqlStore(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    store.close()
    assert diff == []


def test_ensure_schema_adopts_a_database_made_by_create_all(tmp_path: object) -> None:
    store = SqlStore(f"sqlite:///{tmp_path}/adopt.db")
    store.create_all()
    store.ensure_schema()
    store.ensure_schema()
    assert "alembic_version" in store.table_names()
    store.commit([transition()])
    assert store.list_alerts(AlertQuery()).count == 1
    store.close()
