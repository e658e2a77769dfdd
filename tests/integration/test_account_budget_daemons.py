"""Two daemons of one group against a real broker: an account budget that only
the sum of both daemons' spend crosses is judged on the shares they store."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from api.store import SqlStore
from api.tables import AlertRow, TransitionRow
from detector.alerts import (
    OPENED,
    Checkpoint,
    FunctionStatus,
    StoredShare,
    Transition,
    fingerprint,
)
from detector.cost import invocation_cost
from detector.rules import SLOW_RAMP
from dowguard.cli import make_engine
from dowguard.config import Settings
from ingest.events import Context, Event, Invocation, kafka_key
from ingest.partitioning import partition_for
from tests.conftest import TopicFactory
from tests.integration.cli_daemon import ROLES, publish, wait_for
from tests.integration.daemon_child import fast_daemon
from tests.integration.daemon_thread import DaemonThread, daemon_settings

pytestmark = pytest.mark.kafka

PARTITIONS = 2
T0 = 1_772_400_000.0
MIDNIGHT = T0 - T0 % 86_400 + 86_400
ACCOUNT = ("aws", "111122223333")
ACCOUNT_FINGERPRINT = fingerprint(Context(*ACCOUNT, "*", "*", "*"), SLOW_RAMP)
#: One call of each function every GAP_S seconds of event time.
GAP_S = 2.0
#: Event time the first part of the stream ends at: past two judgements.
FIRST_PART_S = 1300.0
LAST_S = 2 * 3600.0


def functions() -> dict[int, Context]:
    """One function of the account on each partition."""
    found: dict[int, Context] = {}
    for i in range(100):
        context = Context(*ACCOUNT, "us-east-1", f"fn{i}")
        found.setdefault(
            partition_for(kafka_key(call(context, 0)), PARTITIONS), context
        )
        if len(found) == PARTITIONS:
            return found
    raise AssertionError("no function keys land on every partition")


def call(context: Context, i: int) -> Invocation:
    return Invocation(
        context, MIDNIGHT + GAP_S / 2 + i * GAP_S, f"r{i}", 999.5, 1000.0, 512
    )


def calls(start_s: float, end_s: float) -> list[Event]:
    out: list[Event] = []
    for context in functions().values():
        out += [
            call(context, i)
            for i in range(round(start_s / GAP_S), round(end_s / GAP_S))
        ]
    return sorted(out, key=lambda e: e.time)


#: What one function spends in a day at its pace; the budget is between it
#: and what the two spend.
ONE_PER_DAY = invocation_cost(call(functions()[0], 0)) * 86_400.0 / GAP_S
BUDGET = 1.5 * ONE_PER_DAY


class Reading:
    """A daemon's view of the shared store: it remembers what it last read of
    the others' shares, so the test can wait until a daemon has seen them."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self.last: list[StoredShare] = []

    def commit(
        self,
        transitions: Sequence[Transition],
        checkpoints: Mapping[int, Checkpoint] | None = None,
        group: str = "",
    ) -> None:
        self.store.commit(transitions, checkpoints, group)

    def load_checkpoint(self, group: str, partition: int) -> Checkpoint | None:
        return self.store.load_checkpoint(group, partition)

    def load_shares(self, group: str) -> list[StoredShare]:
        shares = self.store.load_shares(group)
        with self._lock:
            self.last = shares
        return shares

    def update_functions(self, rows: Sequence[FunctionStatus]) -> None:
        self.store.update_functions(rows)

    def spent_elsewhere(self, held: set[int]) -> float:
        with self._lock:
            return sum(s.day_cost for s in self.last if s.partition not in held)


class Member(DaemonThread):
    """One daemon of a group in a thread, on its own view of the store."""

    def __init__(self, settings: Settings, store: SqlStore) -> None:
        self.sink = Reading(store)
        super().__init__(fast_daemon(settings, make_engine(settings), self.sink))

    def has_read_the_other(self, spent: float) -> bool:
        """Whether its last read of the shares holds ``spent`` of the partition
        it does not hold."""
        held = self.daemon.owned_partitions()
        return self.sink.spent_elsewhere(held) >= spent


def settings_for(
    bootstrap: str, topics: dict[str, str], group: str, url: str, read_s: float
) -> Settings:
    return daemon_settings(
        bootstrap,
        topics,
        group,
        database_url=url,
        partitions=PARTITIONS,
        commit_interval_s=0.3,
        account_shares_read_s=read_s,
        daily_budgets={"/".join(ACCOUNT): BUDGET},
        online_model=False,
    )


def account_events(store: SqlStore) -> list[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(TransitionRow.event)
            .where(TransitionRow.fingerprint == ACCOUNT_FINGERPRINT)
            .order_by(TransitionRow.seq)
        )
        return [row.event for row in rows]


def account_alert_rows(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(AlertRow.id).where(AlertRow.fingerprint == ACCOUNT_FINGERPRINT)
        )
        return len(rows.all())


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[str, SqlStore]]:
    made = {}
    for name in ("shared", "alone"):
        store = SqlStore(f"sqlite:///{tmp_path / name}.db")
        store.ensure_schema()
        made[name] = store
    yield made
    for store in made.values():
        store.close()


def split(members: list[Member]) -> bool:
    owned = [m.daemon.owned_partitions() for m in members]
    return all(len(o) == 1 for o in owned) and set.union(*owned) == {0, 1}


def processed(members: list[Member]) -> int:
    return sum(m.daemon.events_processed for m in members)


@pytest.mark.timeout(300)
def test_two_daemons_raise_the_account_alert_that_neither_would_alone(
    kafka_bootstrap: str, unique_topics: TopicFactory, stores: dict[str, SqlStore]
) -> None:
    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    tag = uuid.uuid4().hex[:8]
    # The same stream read by two groups: one whose daemons read each other's
    # shares, and one whose daemons never do (each judges its own share).
    groups = {
        "shared": settings_for(
            kafka_bootstrap, topics, f"shared-{tag}", stores["shared"].url, 0.2
        ),
        "alone": settings_for(
            kafka_bootstrap, topics, f"alone-{tag}", stores["alone"].url, math.inf
        ),
    }
    members = {
        name: [Member(s, stores[name]) for _ in range(2)] for name, s in groups.items()
    }
    everyone = [m for ms in members.values() for m in ms]
    try:
        for name, ms in members.items():
            wait_for(
                lambda ms=ms: split(ms),
                f"the partitions split between the {name} group's daemons",
                detail=lambda ms=ms: str([m.daemon.owned_partitions() for m in ms]),
            )
        head, tail = calls(0.0, FIRST_PART_S), calls(FIRST_PART_S, LAST_S)
        publish(kafka_bootstrap, topics, head)
        for ms in members.values():
            wait_for(lambda ms=ms: processed(ms) == len(head), "the first part")
        # Each daemon of the sharing group has read what the other spent.
        spent = 0.9 * ONE_PER_DAY * FIRST_PART_S / 86_400.0
        for m in members["shared"]:
            wait_for(
                lambda m=m: m.has_read_the_other(spent),
                "a daemon reading the other's share",
                detail=lambda m=m: str(m.sink.last),
            )
        publish(kafka_bootstrap, topics, tail)
        for ms in members.values():
            wait_for(
                lambda ms=ms: processed(ms) == len(head) + len(tail),
                "the last part",
                detail=lambda ms=ms: str(processed(ms)),
            )
    finally:
        for m in everyone:
            m.stop()
    assert account_events(stores["alone"]) == []
    assert account_events(stores["shared"]) == [OPENED]
    assert account_alert_rows(stores["shared"]) == 1
