"""Account budgets across checkpoints: each partition's share of an account's
spend is snapshotted with it, restored with it, and counted as handed over
once the partition is dropped."""

from __future__ import annotations

import pickle

import pytest

from detector.alerts import OPENED, RESOLVED, Transition
from detector.engine import Engine
from detector.rules import SLOW_RAMP
from ingest.events import Context, Event, Invocation
from tests.detector.streams import CTX, T0, make_engine, regular

HOUR = 3600.0
MIDNIGHT = T0 - T0 % 86_400 + 86_400
ACCOUNT = "/".join(CTX[:2])
OTHER = CTX._replace(function="thumbnail")
#: Width of the buckets an account is judged on (the default recent half-life).
BUCKET_S = 600.0


def unit_cost(inv: Invocation) -> float:
    """Two ten-thousandths of a dollar per invocation, whatever it did."""
    return 2e-4 * inv.count


def busy_then_quiet() -> list[Event]:
    """Two functions of one account on partitions 0 and 1: an hour at
    1.44 USD/h each from midnight, then two hours at 0.36 USD/h each.

    By the quiet hours the day is projected at 2.88 USD spent plus 0.72 USD/h
    to midnight (about 19 USD); spend counted from the second hour on only
    projects about 16 USD.
    """
    events: list[Event] = []
    for context, tag in ((CTX, "a"), (OTHER, "b")):
        events += regular(MIDNIGHT, HOUR, 2.0, tag=f"{tag}1", context=context)
        events += regular(
            MIDNIGHT + HOUR, 2 * HOUR, 0.5, tag=f"{tag}2", context=context
        )
    return sorted(events, key=lambda e: e.time)


def budgeted(daily: float = 20.0) -> Engine:
    return make_engine(unit_cost, daily_budgets=((ACCOUNT, daily),))


def partition_of(event: Event) -> int:
    return 0 if event.context == CTX else 1


def feed(engine: Engine, events: list[Event], flush: bool = True) -> list[Transition]:
    out: list[Transition] = []
    for event in events:
        engine.process(event, partition_of(event))
        out.extend(engine.take_transitions())
    if flush:
        engine.flush()
        out.extend(engine.take_transitions())
    return out


def account_alerts(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.context.function == "*"]


def as_version(blob: bytes, version: int) -> bytes:
    """``blob`` as a checkpoint of ``version`` writes it: no account shares."""
    _, part = pickle.loads(blob)
    del part.accounts
    return pickle.dumps((version, part), protocol=5)


def test_the_whole_run_opens_the_account_alert_and_keeps_it_open() -> None:
    found = account_alerts(feed(budgeted(), busy_then_quiet()))
    assert [(t.event, t.kind) for t in found] == [(OPENED, SLOW_RAMP)]
    assert found[0].context == Context(CTX.provider, CTX.account, "*", "*", "*")
    assert found[0].at < MIDNIGHT + HOUR


@pytest.mark.parametrize("cut_s", [300.0, 1900.0, 1.5 * HOUR, 2.5 * HOUR])
def test_a_restart_mid_day_gives_the_same_account_transitions(cut_s: float) -> None:
    events = busy_then_quiet()
    whole = feed(budgeted(), events)
    split = next(i for i, e in enumerate(events) if e.time >= MIDNIGHT + cut_s)
    first = budgeted()
    head = feed(first, events[:split], flush=False)
    second = budgeted()
    for partition in (0, 1):
        second.restore(partition, first.snapshot(partition))
    tail = feed(second, events[split:])
    assert account_alerts(whole)
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def test_a_version_6_checkpoint_restores_with_no_account_spend() -> None:
    events = busy_then_quiet()
    split = next(i for i, e in enumerate(events) if e.time >= MIDNIGHT + 1.5 * HOUR)
    first = budgeted()
    head = feed(first, events[:split], flush=False)
    assert [t.event for t in account_alerts(head)] == [OPENED]
    second = budgeted()
    for partition in (0, 1):
        second.restore(partition, as_version(first.snapshot(partition), 6))
    tail = account_alerts(feed(second, events[split:]))
    # Judged on the quiet hours alone, the day is projected under the budget:
    # the account alert, known to the old engine only, is not opened again.
    assert tail == []
    assert second.tracked_contexts == 2


def test_a_moved_partition_carries_the_open_account_alert() -> None:
    # 0.72 USD/h on each partition: 34.56 USD a day against a budget of 25.92.
    events = sorted(
        [
            *regular(MIDNIGHT, HOUR, 1.0, context=CTX),
            *regular(MIDNIGHT, HOUR, 1.0, tag="o", context=OTHER),
        ],
        key=lambda e: e.time,
    )
    cut = MIDNIGHT + 1800.0
    split = next(i for i, e in enumerate(events) if e.time >= cut)
    first = make_engine(unit_cost, daily_budgets=((ACCOUNT, 24 * 0.72 * 1.5),))
    head = account_alerts(feed(first, events[:split], flush=False))
    assert [t.event for t in head] == [OPENED]
    # Partition 1 moves to another daemon in a rebalance. The first counts
    # its share as handed over until it reads the stored one: it does not
    # judge the account on partition 0's spend alone.
    moved = first.snapshot(1)
    first.drop(1)
    tail = account_alerts(feed(first, [e for e in events[split:] if e.context == CTX]))
    assert cut % BUCKET_S == 0.0
    assert tail == []
    # The daemon it moved to, reading no shares, judges on partition 1's
    # spend (0.72 USD/h) and resolves the alert it carried over.
    other = make_engine(unit_cost, daily_budgets=((ACCOUNT, 24 * 0.72 * 1.5),))
    other.restore(1, moved)
    there = account_alerts(feed(other, [e for e in events[split:] if e.context != CTX]))
    assert [(t.event, t.seq) for t in there] == [(RESOLVED, 2)]
    assert there[0].at == cut
    assert there[0].fingerprint == head[0].fingerprint
    assert there[0].evidence["rate_usd_per_hour"] == pytest.approx(0.72, rel=0.01)
