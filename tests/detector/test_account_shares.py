"""Account budgets judged on every daemon's spend: the shares of the partitions
held here live, those of the others as stored with their checkpoints."""

from __future__ import annotations

import math

import pytest

from detector.alerts import (
    OPENED,
    RESOLVED,
    AccountAlert,
    Checkpoint,
    StoredShare,
    Transition,
    fingerprint,
)
from detector.engine import Engine
from detector.memory_sink import MemorySink
from detector.rules import SLOW_RAMP
from ingest.events import Context, Event
from tests.detector.streams import CTX, T0, make_engine, regular
from tests.detector.test_account_checkpoints import OTHER, unit_cost

HOUR = 3600.0
DAY = 86_400.0
MIDNIGHT = T0 - T0 % DAY + DAY
ACCOUNT = "/".join(CTX[:2])
ACCOUNT_CONTEXT = Context(CTX.provider, CTX.account, "*", "*", "*")
ACCOUNT_FINGERPRINT = fingerprint(ACCOUNT_CONTEXT, SLOW_RAMP)
GROUP = "g"
#: What one function at one call a second spends in a day (0.72 USD/h).
ALONE_PER_DAY = 24 * 0.72
#: Over one function's day, under two functions' day.
BUDGET = 1.5 * ALONE_PER_DAY


def budgeted(daily: float = BUDGET) -> Engine:
    return make_engine(unit_cost, daily_budgets=((ACCOUNT, daily),))


def partition_of(event: Event) -> int:
    return 0 if event.context == CTX else 1


def both_busy(seconds: float = 2 * HOUR, start: float = MIDNIGHT) -> list[Event]:
    """One call a second of each of the account's two functions, CTX on
    partition 0 and OTHER on partition 1."""
    events: list[Event] = [
        *regular(start, seconds, 1.0, tag="a", context=CTX),
        *regular(start, seconds, 1.0, tag="b", context=OTHER),
    ]
    return sorted(events, key=lambda e: e.time)


def account_alerts(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.fingerprint == ACCOUNT_FINGERPRINT]


class Group:
    """Engines of one consumer group and the sink they share, as daemons.

    ``owner`` maps a partition number to the engine holding it (at the
    start, every engine holds one). Every
    ``read_every_s`` of event time each engine stores its partitions'
    shares as a checkpoint would, then reads all stored shares back.
    """

    def __init__(self, owner: dict[int, Engine], read_every_s: float) -> None:
        self.owner = owner
        self.read_every_s = read_every_s
        self.sink = MemorySink()
        #: The members, whether they hold partitions or not.
        self.engines = list({id(e): e for e in owner.values()}.values())
        #: Every transition any engine emitted, duplicates included.
        self.emitted: list[Transition] = []

    def feed(self, events: list[Event], flush: bool = True) -> None:
        next_read = events[0].time + self.read_every_s
        for event in events:
            if event.time >= next_read:
                self.exchange()
                next_read += self.read_every_s
            partition = partition_of(event)
            engine = self.owner[partition]
            engine.process(event, partition)
            self._store(engine)
        if flush:
            for engine in self.engines:
                engine.flush()
                self._store(engine)

    def exchange(self) -> None:
        for engine in self.engines:
            held = [p for p, e in self.owner.items() if e is engine]
            checkpoints = {
                p: Checkpoint(p, b"", {}, engine.account_shares(p)) for p in held
            }
            self.sink.commit(engine.take_transitions(), checkpoints, GROUP)
        for engine in self.engines:
            engine.take_account_shares(self.sink.load_shares(GROUP))

    def _store(self, engine: Engine) -> None:
        out = engine.take_transitions()
        self.emitted.extend(out)
        self.sink.commit(out, None, GROUP)

    def stored(self) -> list[Transition]:
        return account_alerts(self.sink.transitions())


def stored_share(
    partition: int,
    day_cost: float,
    day_end: float,
    month_end: float | None = None,
    alert: AccountAlert | None = None,
    watermark: float | None = None,
) -> StoredShare:
    """A share of the account that spent ``day_cost`` and has no recent rate,
    of a partition read up to ``watermark`` (the end of its day if None)."""
    if month_end is None:
        month_end = MIDNIGHT + 30 * DAY
    return StoredShare(
        partition,
        CTX.provider,
        CTX.account,
        day_end,
        day_cost,
        month_end - 31 * DAY,
        month_end,
        day_cost,
        MIDNIGHT,
        (),
        MIDNIGHT,
        day_end if watermark is None else watermark,
        alert,
    )


def test_alone_neither_daemon_crosses_the_account_budget() -> None:
    group = Group({0: budgeted(), 1: budgeted()}, read_every_s=math.inf)
    group.feed(both_busy())
    assert group.stored() == []


def test_the_sum_of_both_daemons_opens_the_account_alert_once() -> None:
    group = Group({0: budgeted(), 1: budgeted()}, read_every_s=60.0)
    group.feed(both_busy())
    found = group.stored()
    assert [(t.event, t.seq) for t in found] == [(OPENED, 1)]
    assert found[0].context == ACCOUNT_CONTEXT
    # Judged at the end of the first bucket, on what both spent of it.
    assert found[0].at == MIDNIGHT + 600.0
    projected = found[0].evidence["projected_usd_per_day"]
    assert projected == pytest.approx(2 * ALONE_PER_DAY, rel=0.05)
    # Each daemon judges the account on the whole spend: whoever did not open
    # it adopts the open alert once it reads the other's share.
    assert len(account_alerts(group.emitted)) in (1, 2)
    assert {t.seq for t in account_alerts(group.emitted)} == {1}


def test_a_share_stored_on_another_day_is_not_counted() -> None:
    # Partition 1 spent 10 USD, by its share, of the day before this one.
    engine = budgeted()
    engine.take_account_shares([stored_share(1, 10.0, day_end=MIDNIGHT)])
    group = Group({0: engine}, read_every_s=math.inf)
    group.feed([e for e in both_busy(HOUR) if partition_of(e) == 0])
    assert group.stored() == []


def test_a_share_stored_on_this_day_is_counted() -> None:
    engine = budgeted()
    engine.take_account_shares([stored_share(1, 10.0, day_end=MIDNIGHT + DAY)])
    group = Group({0: engine}, read_every_s=math.inf)
    group.feed([e for e in both_busy(HOUR) if partition_of(e) == 0])
    found = group.stored()
    assert [t.event for t in found] == [OPENED]
    projected = found[0].evidence["projected_usd_per_day"]
    assert projected == pytest.approx(10.0 + ALONE_PER_DAY, rel=0.02)


def test_a_share_stored_in_another_month_is_not_counted() -> None:
    monthly = make_engine(unit_cost, monthly_budgets=((ACCOUNT, 40 * ALONE_PER_DAY),))
    # 200 USD of the month before; 40 days of one function would not reach it.
    monthly.take_account_shares(
        [stored_share(1, 200.0, day_end=MIDNIGHT, month_end=MIDNIGHT - DAY)]
    )
    group = Group({0: monthly}, read_every_s=math.inf)
    group.feed([e for e in both_busy(HOUR) if partition_of(e) == 0])
    assert group.stored() == []


def test_an_alert_open_elsewhere_is_not_opened_again_and_resolves_in_turn() -> None:
    engine = budgeted()
    today = MIDNIGHT + DAY
    elsewhere = AccountAlert(1, True, MIDNIGHT + 600.0, 0.5)
    engine.take_account_shares([stored_share(1, 10.0, today, alert=elsewhere)])
    group = Group({0: engine}, read_every_s=math.inf)
    alone = [e for e in both_busy(2 * HOUR) if partition_of(e) == 0]
    quarter = len(alone) // 4
    group.feed(alone[: 2 * quarter], flush=False)
    # Over the budget with the other's share, but the alert is open already.
    assert group.emitted == []
    # The other partition spent nothing more, by its share, but was read up
    # to the first minute only: what it spent since is not known yet.
    lagging = stored_share(1, 0.0, today, watermark=MIDNIGHT + 60.0)
    engine.take_account_shares([lagging])
    group.feed(alone[2 * quarter : 3 * quarter], flush=False)
    assert group.emitted == []
    # Its share rolls to the next day: what is left here is under the
    # budget, and the adopted alert resolves with the next seq.
    engine.take_account_shares([stored_share(1, 0.0, today + DAY)])
    group.feed(alone[3 * quarter :])
    found = group.stored()
    assert [(t.event, t.seq) for t in found] == [(RESOLVED, 2)]
    assert found[0].starts_at == MIDNIGHT + 600.0
    assert found[0].at == MIDNIGHT + 1.5 * HOUR


def test_a_partition_assigned_here_counts_once() -> None:
    # Counted twice, the two functions would cross a budget that once they do
    # not: 34.56 USD a day against 40.
    budget = 40.0
    first, second = budgeted(budget), budgeted(budget)
    group = Group({0: first, 1: second}, read_every_s=60.0)
    events = both_busy()
    split = len(events) // 2
    group.feed(events[:split], flush=False)
    group.exchange()
    # Partition 1 moves to the first daemon, its stored share still read.
    first.restore(1, second.snapshot(1))
    second.drop(1)
    group.owner[1] = first
    group.feed(events[split:])
    assert group.stored() == []


def test_a_revoked_partition_counts_on_as_stored() -> None:
    group = Group({0: budgeted(), 1: budgeted()}, read_every_s=60.0)
    events = both_busy(3 * HOUR)
    split = len(events) // 3
    group.feed(events[:split], flush=False)
    assert [t.event for t in group.stored()] == [OPENED]
    first, second = group.owner[0], group.owner[1]
    # A rebalance gives partition 1 to the first daemon and then back: the
    # second daemon counts its share as it was while it is away.
    group.exchange()
    moved = second.snapshot(1)
    second.drop(1)
    first.restore(1, moved)
    group.owner[1] = first
    group.feed(events[split : 2 * split], flush=False)
    group.exchange()
    second.restore(1, first.snapshot(1))
    first.drop(1)
    group.owner[1] = second
    group.feed(events[2 * split :])
    # Neither daemon judged the account on one function's spend alone.
    assert [t.event for t in group.stored()] == [OPENED]
    assert [t.event for t in account_alerts(group.emitted)] in ([OPENED], [OPENED] * 2)
