"""The alert list's fast path: built statements per shape, JSON built from rows."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from api import schemas
from api.schemas import AlertPublic, AlertsPublic
from api.store import STALE_COUNT_FACTOR, AlertQuery, Matcher, SqlStore
from detector.alerts import OPENED, Transition, fingerprint
from ingest.events import Context
from tests.api.conftest import FakeClock


def opened(
    function: str, account: str = "111122223333", cost: float = 1.0
) -> Transition:
    ctx = Context("aws", account, "us-east-1", function, "prod")
    return Transition(
        fingerprint=fingerprint(ctx, "recursion"),
        event=OPENED,
        seq=1,
        at=1000.0,
        starts_at=1000.0,
        context=ctx,
        kind="recursion",
        severity="critical",
        cost_usd=cost,
        summary=f"loop through {function} é",
        evidence={"hops": 3},
    )


@pytest.fixture
def filled(store: SqlStore, clock: FakeClock) -> SqlStore:
    store.commit([opened(f"fn{i}", f"acct{i % 3}", cost=i + 0.5) for i in range(12)])
    store.create_silence(
        [Matcher("function", "fn4")], clock() - 10, clock() + 600, "ops", "known"
    )
    return store


@pytest.mark.parametrize(
    "query",
    [
        AlertQuery(),
        AlertQuery(states=("open", "silenced"), sort="cost_usd", limit=5),
        AlertQuery(account="acct1", order="asc"),
    ],
)
def test_rendered_page_equals_the_validated_models(
    filled: SqlStore, query: AlertQuery
) -> None:
    page = filled.list_alerts(query)
    assert page.data
    validated = AlertsPublic(
        data=[AlertPublic.build(v) for v in page.data],
        count=page.count,
        next_cursor=page.next_cursor,
    )
    assert orjson.loads(AlertsPublic.render(page)) == orjson.loads(
        validated.model_dump_json()
    )


def test_one_shape_reuses_its_statements_with_other_values(filled: SqlStore) -> None:
    first = filled.list_alerts(AlertQuery(account="acct0", limit=2))
    built = dict(filled._listings)
    other = filled.list_alerts(AlertQuery(account="acct2", limit=3))
    assert filled._listings == built
    assert {v.row.account for v in first.data} == {"acct0"}
    assert {v.row.account for v in other.data} == {"acct2"}
    assert (len(first.data), len(other.data)) == (2, 3)
    assert first.count == other.count == 4


def test_cursor_pages_of_a_built_statement_cover_everything_once(
    filled: SqlStore,
) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = filled.list_alerts(AlertQuery(sort="cost_usd", limit=5, cursor=cursor))
        seen += [v.row.fingerprint for v in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 12


def test_listed_labels_and_annotations_are_the_stored_maps(filled: SqlStore) -> None:
    view = filled.list_alerts(AlertQuery(function="fn7")).data[0]
    assert view.row.labels["function"] == "fn7"
    assert view.row.annotations["summary"] == "loop through fn7 é"
    document = orjson.loads(AlertsPublic.render(filled.list_alerts(AlertQuery())))
    assert all(
        isinstance(v, str) for a in document["data"] for v in a["labels"].values()
    )


def test_an_expired_count_is_served_while_it_is_recounted(
    filled: SqlStore, clock: FakeClock
) -> None:
    # Another process (the daemon) writes: this store's cache does not know.
    daemon = SqlStore(filled.url, clock=clock)
    try:
        assert filled.list_alerts(AlertQuery()).count == 12
        daemon.commit([opened("late")])
        assert filled.list_alerts(AlertQuery()).count == 12
        clock.advance(filled.cache_s)
        # Expired: the old count comes back at once, a recount starts.
        assert filled.list_alerts(AlertQuery()).count == 12
        filled.settle()
        assert filled.list_alerts(AlertQuery()).count == 13
        daemon.commit([opened("later")])
        clock.advance(filled.cache_s * STALE_COUNT_FACTOR)
        # Too old to serve: counted again before the answer.
        assert filled.list_alerts(AlertQuery()).count == 14
    finally:
        daemon.close()


def test_a_write_through_the_store_is_counted_at_once(filled: SqlStore) -> None:
    assert filled.list_alerts(AlertQuery()).count == 12
    filled.commit([opened("new")])
    assert filled.list_alerts(AlertQuery()).count == 13


def test_the_moment_memo_stays_bounded_and_exact() -> None:
    for i in range(schemas.MOMENT_MEMO_SIZE + 10):
        schemas.moment(1_800_000_000.0 + i / 8)
    assert len(schemas._MOMENTS) <= schemas.MOMENT_MEMO_SIZE
    assert schemas.moment(1_800_000_000.125) == datetime(
        2027, 1, 15, 8, 0, 0, 125000, tzinfo=UTC
    )
