"""Early firing on call starts: a flood seen while its calls still run.

The baseline is the one of the early-firing tests (ten calls of 1e-4 USD
in every window), each call now logged with its start a tenth of a second
before its REPORT. Thirteen starts over the shortest span of two seconds
are the fewest that are more than chance; priced at the usual 1e-4 USD
each, they are 2.34 USD/h, over the warning rate.
"""

from __future__ import annotations

import dataclasses

import pytest

from detector.alerts import CRITICAL, OPENED, RESOLVED, UPDATED, WARNING, Transition
from detector.engine import COST_SPIKE
from ingest.events import Context, Event, Invocation, InvocationStart
from tests.detector.streams import (
    CTX,
    T0,
    feed,
    make_engine,
    opened,
    regular,
    steady,
)
from tests.detector.test_early import (
    AGED,
    LEAST_CALLS,
    ONSET,
    SPAN_S,
    WARM_S,
    WARN_USD_H,
    by_duration,
    call,
    fired_with_and_without_gates,
    run,
)

OTHER = CTX._replace(function="elsewhere")
LONG_MS = 60_000.0


def with_starts(events: list[Event]) -> list[Event]:
    """Each call's start, a tenth of a second before its REPORT, and the call."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Invocation):
            out.append(
                InvocationStart(event.context, event.time - 0.1, event.request_id)
            )
        out.append(event)
    return out


def started(
    start: float, calls: int, within_s: float, ms: float = LONG_MS
) -> list[Event]:
    """``calls`` calls begun evenly within ``within_s``, each running ``ms``."""
    step = within_s / calls
    out: list[Event] = []
    for i in range(calls):
        at = start + 0.05 + i * step
        out.append(InvocationStart(CTX, at, f"long-{i}"))
        out.append(Invocation(CTX, at + ms / 1000.0, f"long-{i}", ms, ms, 128))
    return out


def warm(events: list[Event], quiet_after: bool = True) -> list[Event]:
    """The warm baseline with starts, ``events``, then (or not) the baseline again."""
    after = with_starts(regular(ONSET + 10.0, 300.0)) if quiet_after else []
    return [*with_starts(regular(T0, WARM_S)), *events, *after]


def early_on(alert: Transition) -> dict[str, object]:
    detail = alert.evidence["early_on"]
    assert isinstance(detail, dict)
    return detail


def test_the_baseline_with_its_starts_raises_nothing() -> None:
    assert run(with_starts(regular(T0, 2 * WARM_S))) == []


def test_a_flood_of_long_calls_fires_from_its_starts_before_any_report() -> None:
    flood = started(ONSET, LEAST_CALLS, 1.5)
    first_report = min(e.time for e in flood if isinstance(e, Invocation))
    alerts = [a for a in opened(run(warm(flood)), COST_SPIKE) if a.at < first_report]
    assert len(alerts) == 1
    alert = alerts[0]
    last = [e.time for e in flood if isinstance(e, InvocationStart)][-1]
    # At the last start of the bar, a minute before the first of their REPORTs.
    assert alert.at == last < first_report
    assert alert.severity == WARNING and alert.evidence["early"] is True
    detail = early_on(alert)
    assert detail["on"] == "starts, elapsed rate"
    assert detail["starts_so_far"] == LEAST_CALLS
    assert detail["invocations_so_far"] == 0
    assert detail["cost_so_far_usd"] == 0.0
    assert detail["usual_cost_per_call_usd"] == pytest.approx(1e-4)
    assert detail["estimated_cost_usd"] == pytest.approx(LEAST_CALLS * 1e-4)
    assert detail["threshold_usd_per_hour"] == pytest.approx(WARN_USD_H)
    # Thirteen starts of 1e-4 USD over two seconds.
    assert alert.evidence["rate_usd_per_hour"] == pytest.approx(2.34)


def test_one_start_fewer_than_the_bar_does_not_fire_early() -> None:
    flood = started(ONSET, LEAST_CALLS - 1, 1.5)
    early = [a for a in opened(run(warm(flood)), COST_SPIKE) if a.at < ONSET + 10.0]
    assert early == []


def test_the_bar_counts_the_usual_starts_of_the_span() -> None:
    # Ten calls a window are usual, two of them in two seconds: the flood's
    # starts come on top of the baseline's, which count towards the bar.
    usual = with_starts([call(ONSET + 0.5, 900), call(ONSET + 1.5, 901)])
    flood = started(ONSET, LEAST_CALLS - 2, 1.5)
    alerts = [
        a
        for a in opened(run(warm([*usual, *flood])), COST_SPIKE)
        if a.at < ONSET + 10.0
    ]
    assert [early_on(a)["starts_so_far"] for a in alerts] == [LEAST_CALLS]


def test_starts_of_calls_at_a_usual_cost_rate_do_not_fire() -> None:
    # Thirteen starts spread over the whole window: over the count of a
    # window (ten) but not over the bar of any span judged.
    flood = started(ONSET, LEAST_CALLS, 9.5)
    assert [
        a for a in opened(run(warm(flood)), COST_SPIKE) if a.at < ONSET + 10.0
    ] == []


def test_critical_from_starts_needs_the_count_margin_at_the_critical_rate() -> None:
    # 29 starts in two seconds are more than chance at the critical rate
    # (20 + 2 * sqrt(20)); 28 only warn, however costly each call will be.
    for calls, severities in ((28, [WARNING]), (29, [WARNING, CRITICAL])):
        out = run(warm(started(ONSET, calls, 1.5), quiet_after=False))
        early = [
            t
            for t in out
            if t.kind == COST_SPIKE
            and t.event in (OPENED, UPDATED)
            and t.at < ONSET + 2
        ]
        assert [t.severity for t in early] == severities
        assert all(early_on(t)["on"] == "starts, elapsed rate" for t in early)


def test_the_cost_of_an_alert_fired_on_starts_is_counted_once() -> None:
    # Thirty calls of five seconds (5e-3 USD each) begin at the onset; then
    # nothing more, so the alert resolves on empty windows.
    flood = started(ONSET, 30, 1.5, ms=5000.0)
    out = [t for t in run(warm(flood, quiet_after=False)) if t.kind == COST_SPIKE]
    assert out[0].event == OPENED and early_on(out[0])["on"].startswith("starts")
    assert out[-1].event == RESOLVED
    # Every REPORT came after the alert opened: their cost, not the estimate.
    assert out[-1].evidence["cost_so_far_usd"] == pytest.approx(30 * 5e-3)


def test_the_window_close_does_not_count_starts_as_invocations() -> None:
    engine = make_engine(by_duration, online_model=False, **AGED)
    # Calls that begin and are still running when their window closes.
    running = [e for e in started(ONSET, LEAST_CALLS, 1.5) if type(e) is not Invocation]
    assert opened(feed(engine, warm(running, quiet_after=False), False), COST_SPIKE)
    engine.take_status()
    # An event of another context moves the watermark past the window's end.
    engine.process(Invocation(OTHER, ONSET + 15.5, "x", 100.0, 100.0, 128), 0)
    (status,) = [s for s in engine.take_status() if s.context == CTX]
    # The calls still run: the window closed without cost or invocations.
    assert (status.cost_usd_per_hour, status.invocations_per_s) == (0.0, 0.0)


def test_starts_of_a_context_never_reported_are_not_judged() -> None:
    unseen = Context("aws", "111122223333", "us-east-1", "new", "$LATEST")
    engine = make_engine(by_duration, online_model=False)
    starts = [InvocationStart(unseen, T0 + i / 100.0, f"s{i}") for i in range(500)]
    assert feed(engine, starts) == []
    assert engine.tracked_contexts == 0


def test_an_alert_fired_on_starts_is_the_one_the_close_would_open() -> None:
    # A steady 8x flood of calls of one second: the starts open the alert,
    # the REPORTs and window closes update that same alert.
    flood: list[Event] = []
    for i in range(480):
        at = ONSET + i / 8.0
        flood.append(InvocationStart(CTX, at, f"f{i}"))
        flood.append(Invocation(CTX, at + 1.0, f"f{i}", 100.0, 100.0, 128))
    events = [*with_starts(regular(T0, WARM_S)), *flood]
    out = [t for t in run(events) if t.kind == COST_SPIKE]
    assert out[0].event == OPENED
    assert early_on(out[0])["on"] == "starts, elapsed rate"
    assert out[0].at < ONSET + SPAN_S
    assert [t.event for t in out].count(OPENED) == 1
    assert len({t.fingerprint for t in out}) == 1


def test_the_cached_gates_never_hide_a_firing_on_starts() -> None:
    # Poisson traffic of calls of three seconds, with floods of several
    # sizes: the gated engine fires exactly as one that judges every start.
    def calls(factor: float, start: float, seconds: float, seed: int) -> list[Event]:
        out: list[Event] = []
        for inv in steady(factor, start, seconds, seed=seed):
            out.append(InvocationStart(CTX, inv.time, inv.request_id))
            out.append(dataclasses.replace(inv, time=inv.time + 3.0))
        return out

    events = calls(1.0, T0, WARM_S, 4)
    t = ONSET
    for i, factor in enumerate((1.5, 3.0, 6.0, 12.0, 40.0)):
        events += calls(factor, t, 45.0, 10 + i)
        events += calls(1.0, t + 45.0, 255.0, 20 + i)
        t += 300.0
    expected = fired_with_and_without_gates(events)
    on_starts = [
        t for t in expected if "starts_so_far" in t.evidence.get("early_on", {})
    ]
    assert on_starts, "the stream fires on starts"
