"""Billed against computed cost: CUR/FOCUS periods, EstimatedCharges, gaps."""

from __future__ import annotations

import copyreg
import heapq
import io
import math
import pickle
import random

import pytest

from detector.alerts import OPENED, RESOLVED, UPDATED, WARNING, Transition
from detector.engine import BILLING_GAP, SNAPSHOT_VERSION, DetectorConfig, Engine
from detector.reconcile import BillingTrack
from detector.sources import (
    BILLED,
    COMPUTED,
    PartitionSources,
    Ring,
    SourcesConfig,
    SourceState,
)
from ingest.events import Billing, Context, Event, Invocation
from tests.detector.streams import CTX, T0, flat_cost, no_span_cost, run, steady

H0 = T0 + 2400.0  # 2026-03-01T22:00:00Z, an hour boundary
HOUR = 3600.0
CHARGES = Context("aws", CTX.account, "us-east-1", "service:AWSLambda", "")


def make_engine(**sources: float) -> Engine:
    cfg = SourcesConfig(**{"billing_min_usd": 0.0, **sources})  # type: ignore[arg-type]
    return Engine(DetectorConfig(sources=cfg), flat_cost, no_span_cost)


def hour_of_logs() -> list[Invocation]:
    """Logs from ten minutes before the hour until two minutes after it."""
    return list(steady(10.0, H0 - 600.0, HOUR + 720.0))


def in_hour(logs: list[Invocation], start: float = H0) -> float:
    return sum(1e-4 for inv in logs if start <= inv.time < start + HOUR)


def cur_row(cost: float, kind: str = "gb_seconds", start: float = H0) -> Billing:
    return Billing(CTX, start, start + HOUR, cost, 1.0, kind, "cur")


def gaps(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.kind == BILLING_GAP]


def late(engine: Engine, events: list[Event]) -> list[Transition]:
    """Feed rows after the stream (as billing arrives: hours late), then flush."""
    out = run(engine, [], flush=False)
    for event in events:
        engine.process(event, 0)
    engine.flush()
    return out + engine.take_transitions()


@pytest.mark.parametrize(("factor", "alerts"), [(1.49, 0), (1.51, 1), (0.49, 1)])
def test_billing_gap_at_the_edge_of_its_tolerance(factor: float, alerts: int) -> None:
    logs = hour_of_logs()
    computed = in_hour(logs)
    engine = make_engine(billing_tolerance=0.5)
    billed = computed * factor
    rows = [cur_row(billed * 0.25, "requests"), cur_row(billed * 0.75)]
    transitions = gaps(run(engine, [*logs, *rows]))
    assert len(transitions) == alerts
    assert engine.source_counts["billing_compared"] == 1
    if alerts:
        gap = transitions[0]
        assert (gap.event, gap.severity) == (OPENED, WARNING)
        assert gap.evidence["billed_usd"] == pytest.approx(billed, rel=1e-5)
        assert gap.evidence["computed_usd"] == pytest.approx(computed, rel=1e-5)
        assert gap.evidence["period"] == [
            "2026-03-01T22:00:00.000Z",
            "2026-03-01T23:00:00.000Z",
        ]
        assert gap.evidence["billing_source"] == "cur"
        assert gap.evidence["source"] == "billing"


def test_the_absolute_floor_keeps_small_gaps_quiet() -> None:
    logs = hour_of_logs()
    computed = in_hour(logs)  # 3.6 USD
    engine = make_engine(billing_tolerance=0.1, billing_min_usd=5.0)
    assert gaps(run(engine, [*logs, cur_row(computed * 2.0)])) == []


def test_billing_for_a_function_never_seen_points_at_unseen_functions() -> None:
    ghost = CTX._replace(function="ghost")
    row = Billing(ghost, H0, H0 + HOUR, 2.0, 1.0, "requests", "cur")
    transitions = gaps(run(make_engine(), [*hour_of_logs(), row]))
    assert [t.context.function for t in transitions] == ["ghost"]
    assert transitions[0].evidence["computed_usd"] == 0.0
    assert "does not see" in transitions[0].evidence["hint"]


def test_late_rows_are_compared_once_all_of_a_period_is_in() -> None:
    logs = hour_of_logs()
    computed = in_hour(logs)
    engine = make_engine(billing_tolerance=0.2)
    run(engine, logs, flush=False)
    # The three rows of the hour arrive together, hours after it: only their
    # sum is compared, not the first row alone (which would be a gap).
    rows: list[Event] = [
        cur_row(computed * 0.2, "requests"),
        cur_row(computed * 0.7),
        cur_row(computed * 0.1, "storage"),
    ]
    transitions = gaps(late(engine, rows))
    assert transitions == []
    assert engine.source_counts["billing_compared"] == 1


def test_a_correction_row_after_the_comparison_reopens_the_question() -> None:
    logs = hour_of_logs()
    computed = in_hour(logs)
    engine = make_engine(billing_tolerance=0.2)
    first = gaps(run(engine, [*logs, cur_row(computed)], flush=False))
    assert first == []
    follow = list(steady(10.0, H0 + HOUR + 720.0, 300.0, seed=9))
    correction = cur_row(computed, "requests")
    transitions = gaps(run(engine, [*follow, correction]))
    assert [t.event for t in transitions] == [OPENED]
    assert transitions[0].evidence["billed_usd"] == pytest.approx(2 * computed, 1e-5)


def test_rows_older_than_the_kept_hours_are_counted_not_compared() -> None:
    logs = list(steady(10.0, H0 - 600.0, 4 * HOUR + 720.0))
    engine = make_engine(hours_kept=2)
    run(engine, logs, flush=False)
    transitions = gaps(late(engine, [cur_row(5.0)]))
    assert transitions == []
    assert engine.source_counts["billing_too_late"] == 1
    assert engine.source_counts["billing_compared"] == 0


def test_a_gap_resolves_when_a_later_period_agrees() -> None:
    logs = list(steady(10.0, H0 - 600.0, 2 * HOUR + 720.0))
    engine = make_engine(billing_tolerance=0.2)
    second = cur_row(in_hour(logs, H0 + HOUR), start=H0 + HOUR)
    rows = [cur_row(3 * in_hour(logs)), second]
    transitions = gaps(run(engine, [*logs, *rows]))
    assert [t.event for t in transitions] == [OPENED, RESOLVED]


def test_period_before_the_detector_watched_is_skipped() -> None:
    logs = list(steady(10.0, H0 + 60.0, HOUR + 600.0))
    engine = make_engine()
    assert gaps(run(engine, [*logs, cur_row(50.0)])) == []
    assert engine.source_counts["billing_uncovered"] == 1


def test_bad_billing_values_are_ignored_and_counted() -> None:
    engine = make_engine()
    bad = [
        cur_row(-1.0),
        cur_row(math.nan),
        Billing(CTX, H0, H0 - 1.0, 1.0, 1.0, "requests", "cur"),
    ]
    assert gaps(run(engine, [*hour_of_logs(), *bad])) == []
    assert engine.source_counts["billing_rejected"] == 3


def charges(values: list[tuple[float, float]]) -> list[Event]:
    return [
        Billing(CHARGES, t, t + 60.0, v, 0.0, "estimated_charges", "metric_stream")
        for t, v in values
    ]


def test_estimated_charges_rising_as_computed_raise_nothing() -> None:
    logs = hour_of_logs()
    # 10 calls/s at 1e-4 USD: 0.6 USD every ten minutes.
    samples = [(H0 + 600.0 * k, 40.0 + 0.6 * k) for k in range(6)]
    engine = make_engine(billing_tolerance=0.3)
    assert gaps(run(engine, [*logs, *charges(samples)])) == []
    assert engine.source_counts["billing_compared"] == 5


def test_estimated_charges_rising_faster_than_computed_is_a_gap() -> None:
    logs = hour_of_logs()
    samples = [(H0, 40.0), (H0 + 600.0, 40.6), (H0 + 1200.0, 43.6)]
    engine = make_engine(billing_tolerance=0.3)
    transitions = gaps(run(engine, [*logs, *charges(samples)]))
    assert [t.event for t in transitions] == [OPENED]
    gap = transitions[0]
    assert gap.context == CHARGES
    # 3 USD in ten minutes billed, 0.6 computed: 18 against 3.6 USD/h.
    assert gap.evidence["billed_usd_per_hour"] == pytest.approx(18.0, rel=1e-3)
    assert gap.evidence["computed_usd_per_hour"] == pytest.approx(3.6, rel=0.05)
    assert gap.evidence["partitions_counted"] == 1
    assert "does not see" in gap.evidence["hint"]


def test_charges_of_an_account_with_no_watched_function_are_not_compared() -> None:
    # A payer account's charges, its functions running in linked accounts
    # that are watched elsewhere: nothing computed here to set against them.
    logs = hour_of_logs()
    payer = Context("aws", "999988887777", "us-east-1", "service:AWSLambda", "")
    samples = [(H0, 40.0), (H0 + 600.0, 40.6), (H0 + 1200.0, 43.6)]
    rows = [
        Billing(payer, t, t + 60.0, v, 0.0, "estimated_charges", "metric_stream")
        for t, v in samples
    ]
    engine = make_engine(billing_tolerance=0.3)
    assert gaps(run(engine, [*logs, *rows])) == []
    assert engine.source_counts["billing_compared"] == 0
    assert engine.source_counts["billing_uncovered"] == 2


def test_estimated_charges_falling_start_a_new_month() -> None:
    logs = hour_of_logs()
    samples = [(H0, 900.0), (H0 + 600.0, 0.6), (H0 + 1200.0, 1.2)]
    engine = make_engine(billing_tolerance=0.3)
    assert gaps(run(engine, [*logs, *charges(samples)])) == []
    assert engine.source_counts["billing_compared"] == 1


def test_snapshot_and_restore_keep_queued_billing() -> None:
    logs = hour_of_logs()
    events = sorted([*logs, cur_row(3 * in_hour(logs))], key=lambda e: e.time)
    whole = gaps(run(make_engine(), list(events)))
    assert [t.event for t in whole] == [OPENED]
    cut = len(events) // 2
    first = make_engine()
    head = run(first, events[:cut], flush=False)
    second = make_engine()
    second.restore(0, first.snapshot(0))
    tail = run(second, events[cut:])
    assert [t.to_json() for t in gaps(head + tail)] == [t.to_json() for t in whole]


def test_an_open_gap_updates_on_the_next_gap() -> None:
    logs = list(steady(10.0, H0 - 600.0, 2 * HOUR + 720.0))
    engine = make_engine(billing_tolerance=0.2)
    rows = [cur_row(3 * in_hour(logs)), cur_row(0.0, start=H0 + HOUR)]
    transitions = gaps(run(engine, [*logs, *rows]))
    assert [t.event for t in transitions] == [OPENED, UPDATED]


@pytest.mark.parametrize(("factor", "alerts"), [(1.1, 0), (3.0, 1)])
def test_rows_without_a_function_are_compared_with_the_whole_account(
    factor: float, alerts: int
) -> None:
    logs = hour_of_logs()
    other = list(steady(5.0, H0 - 600.0, HOUR + 720.0, CTX._replace(function="b")))
    elsewhere = list(
        steady(5.0, H0 - 600.0, HOUR + 720.0, CTX._replace(region="eu-west-1"))
    )
    region_total = in_hour(logs) + in_hour(other)
    account = Context("aws", CTX.account, CTX.region, "", "")
    billed = region_total * factor
    row = Billing(account, H0, H0 + HOUR, billed, 1.0, "requests", "cur")
    engine = make_engine(billing_tolerance=0.2)
    transitions = gaps(run(engine, [*logs, *other, *elsewhere, row]))
    assert len(transitions) == alerts
    if alerts:
        assert transitions[0].evidence["computed_usd"] == pytest.approx(
            region_total, rel=1e-4
        )


def _ring_of_lane(src: SourceState, lane: int) -> Ring:
    """The ring that held a lane's sums before the lanes shared an array."""
    ring = Ring(HOUR, src.size)
    lo, n, first, latest = src._lane(lane)
    ring.first, ring.latest = first, latest
    ring.values = src.values[lo : lo + n]
    return ring


class _OldLayout(pickle.Pickler):
    """Writes source and billing state as checkpoints before the lanes did.

    Then a context's computed hours were a ring of its source state, its
    billed hours a ring of its billing track, each queued period a pair,
    each queued context a heap entry of (time, ticket, context) and the
    latest comparison a tuple.
    """

    def __init__(self, file: io.BytesIO, part: object) -> None:
        super().__init__(file, protocol=5)
        self.owner: dict[int, SourceState] = {}
        for state in part.contexts.values():  # type: ignore[attr-defined]
            if state.sources is not None and state.sources.billing is not None:
                self.owner[id(state.sources.billing)] = state.sources

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, SourceState):
            slots = {
                "hours": _ring_of_lane(obj, COMPUTED),
                "metric": obj.metric,
                "billing": obj.billing,
                "gap_alert": obj.gap_alert,
            }
            return copyreg.__newobj__, (SourceState,), (None, slots)  # type: ignore[attr-defined]
        if isinstance(obj, BillingTrack):
            slots = {name: getattr(obj, name) for name in BillingTrack.__slots__}
            for name in ("start", "end", "billed", "computed", "excluded"):
                del slots[f"last_{name}"]
            for name in ("next_start", "next_end", "later"):
                del slots[name]
            slots["last"] = obj.last
            q = obj.queued
            slots["queued"] = tuple((q[i], q[i + 1]) for i in range(0, len(q), 2))
            slots["billed"] = _ring_of_lane(self.owner[id(obj)], BILLED)
            return copyreg.__newobj__, (BillingTrack,), (None, slots)  # type: ignore[attr-defined]
        if isinstance(obj, PartitionSources):
            entries = [
                (slot[0], ticket, context)
                for ticket, (slot, context) in enumerate(
                    (slot, context) for slot in sorted(obj.due) for context in slot[1:]
                )
            ]
            heapq.heapify(entries)
            slots = {
                "since": obj.since,
                "latest_metric": obj.latest_metric,
                "accounts": obj.accounts,
                "due": entries,
                "ticket": len(entries),
            }
            return copyreg.__newobj__, (PartitionSources,), (None, slots)  # type: ignore[attr-defined]
        return NotImplemented


def _old_snapshot(engine: Engine) -> bytes:
    part = engine._parts[0]
    out = io.BytesIO()
    _OldLayout(out, part).dump((SNAPSHOT_VERSION, part))
    return out.getvalue()


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.9])
def test_a_checkpoint_from_before_the_billed_lane_restores(cut: float) -> None:
    # Two hours of logs, each hour billed (the first at three times its
    # cost), and a correction for the first hour after its comparison.
    logs = list(steady(10.0, H0 - 600.0, 2 * HOUR + 720.0))
    rows = [
        cur_row(3 * in_hour(logs)),
        cur_row(in_hour(logs, H0 + HOUR), start=H0 + HOUR),
    ]
    events = sorted([*logs, *rows], key=lambda e: e.time)
    correction = cur_row(0.5 * in_hour(logs), "requests")
    whole = gaps(late(make_engine(), [*events, correction]))
    assert [t.event for t in whole][:1] == [OPENED]
    at = int(len(events) * cut)
    first = make_engine()
    head = run(first, events[:at], flush=False)
    old = _old_snapshot(first)
    assert b"due_at" not in old and b"computed_n" not in old
    assert b"last_billed" not in old and b"next_start" not in old
    second = make_engine()
    second.restore(0, old)
    tail = late(second, [*events[at:], correction])
    assert [t.to_json() for t in gaps(head + tail)] == [t.to_json() for t in whole]
    # Counters are the engine's, not the checkpoint's: the two add up.
    counts = {k: v + second.source_counts[k] for k, v in first.source_counts.items()}
    reference = make_engine()
    late(reference, [*events, correction])
    assert counts == reference.source_counts


def test_source_state_lanes_sum_as_two_rings_of_their_own() -> None:
    rng = random.Random(5)
    src = SourceState(6)
    rings = {COMPUTED: Ring(HOUR, 6), BILLED: Ring(HOUR, 6)}
    for _ in range(600):
        lane = rng.choice((COMPUTED, BILLED))
        start = rng.uniform(0.0, 30 * HOUR)
        if rng.random() < 0.3:
            end = start + rng.uniform(0.0, 4 * HOUR)
            kept = src.add_span(start, end, 1.0, lane)
            assert kept == rings[lane].add_span(start, end, 1.0)
        else:
            assert src.add(start, 1.0, lane) == rings[lane].add(start, 1.0)
        a = rng.uniform(-HOUR, 31 * HOUR)
        b = a + rng.uniform(0.0, 5 * HOUR)
        for other, ring in rings.items():
            assert src.total(a, b, other) == ring.total(a, b)
    assert len(src.values) == 12  # both lanes at full size, in one array
    assert src.hours.total(0.0, 31 * HOUR) == rings[COMPUTED].total(0.0, 31 * HOUR)
