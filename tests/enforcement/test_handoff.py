"""The hand-off from the daemon's sink to enforcement and forwarding.

Hooks here block on events the test controls, so "the caller did not wait"
is shown by the caller returning while the hook is still held, not by time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry

from detector.alerts import FunctionStatus, Transition
from detector.enforcement import Enforcer, MemoryActionLog, Policy
from detector.enforcement.audit import RELEASE, SUCCEEDED, THROTTLE
from detector.enforcement.handoff import AfterStore, HandOff
from detector.memory_sink import MemorySink

from .conftest import context, transition
from .held_hook import HeldHook

WAIT_S = 30.0


class Recorder:
    """A forwarder that notes what it was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, transitions: Sequence[Transition]) -> int:
        self.sent.extend(t.fingerprint for t in transitions)
        return len(transitions)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_held_hook_does_not_hold_up_commits_and_a_full_queue_drops() -> None:
    hook = HeldHook(WAIT_S)
    log = MemoryActionLog()
    enforcer = Enforcer(hook, Policy(), log)
    inner = MemorySink()
    sink = AfterStore(inner, enforcer=enforcer, capacity=2)
    sink.start()
    try:
        sink.commit([transition(context("one"))])
        assert hook.entered.wait(WAIT_S)
        # The worker is inside the hook: two more batches queue, the next
        # one is dropped, and every commit reached the inner sink at once.
        for name in ("two", "three", "four"):
            sink.commit([transition(context(name))])
        handoff = sink.handoffs["enforcement"]
        assert handoff.dropped == 1
        assert handoff.backlog == 3
        assert len(inner.transitions()) == 4
        hook.go.set()
        assert sink.wait_idle(WAIT_S)
    finally:
        hook.go.set()
        sink.close()
    kept = ["one", "two", "three"]
    assert hook.calls == [("throttle", name) for name in kept]
    assert [r.context.function for r in log.find(state=SUCCEEDED)] == kept


def test_transitions_reach_the_forwarder_and_status_the_enforcer() -> None:
    hook = HeldHook(WAIT_S)
    hook.go.set()
    log = MemoryActionLog()
    enforcer = Enforcer(hook, Policy(release_after_s=None), log)
    recorder = Recorder()
    sink = AfterStore(MemorySink(), enforcer=enforcer, forwarder=recorder)
    sink.start()
    ctx = context("orders")
    alert = transition(ctx)
    try:
        sink.commit([alert])
        assert sink.wait_idle(WAIT_S)
        # Spend back near its baseline: the throttle is marked recovered.
        sink.update_functions([FunctionStatus(ctx, time.time(), 1.0, 1.0, 1.0)])
        assert sink.wait_idle(WAIT_S)
    finally:
        sink.close()
    assert recorder.sent == [alert.fingerprint]
    (throttle,) = log.find(state=SUCCEEDED)
    assert "recovered_at" in throttle.outcome


def test_redelivered_transitions_cause_no_second_action() -> None:
    log = MemoryActionLog()
    hook = HeldHook(WAIT_S)
    hook.go.set()
    sink = AfterStore(MemorySink(), enforcer=Enforcer(hook, Policy(), log))
    sink.start()
    alert = transition(context("orders"))
    try:
        sink.commit([alert])
        sink.commit([alert])
        assert sink.wait_idle(WAIT_S)
    finally:
        sink.close()
    assert hook.calls == [("throttle", "orders")]
    assert [r.verb for r in log.find()] == [THROTTLE]


def test_the_tick_thread_releases_after_the_ttl_and_stops_on_close() -> None:
    hook = HeldHook(WAIT_S)
    hook.go.set()
    log = MemoryActionLog()
    # A TTL of zero is due at once: the release waits only for a tick.
    enforcer = Enforcer(hook, Policy(release_after_s=0.0), log)
    sink = AfterStore(MemorySink(), enforcer=enforcer, tick_interval_s=0.05)
    sink.start()
    try:
        sink.commit([transition(context("orders"))])
        wait_until(lambda: len(hook.calls) == 2, "the release")
    finally:
        sink.close()
    assert hook.calls == [("throttle", "orders"), ("release", "orders")]
    assert [r.verb for r in log.find(state=SUCCEEDED)] == [THROTTLE, RELEASE]
    assert not any(t.name == "enforcement-ticks" for t in threading.enumerate())


def test_a_failing_consumer_is_counted_and_the_worker_goes_on() -> None:
    seen: list[int] = []

    def consume(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        seen.append(item)

    handoff: HandOff[int] = HandOff("test", consume)
    handoff.start()
    for item in (1, 2, 3):
        assert handoff.offer(item)
    assert handoff.wait_idle(WAIT_S)
    handoff.stop()
    assert seen == [2, 3]
    assert (handoff.handled, handoff.failed, handoff.dropped) == (2, 1, 0)


def test_backlog_and_drops_are_exported_while_running() -> None:
    registry = CollectorRegistry()
    hook = HeldHook(WAIT_S)
    sink = AfterStore(
        MemorySink(),
        enforcer=Enforcer(hook, Policy(), MemoryActionLog()),
        forwarder=Recorder(),
        capacity=1,
        registry=registry,
    )
    sink.start()
    try:
        sink.commit([transition(context("one"))])
        assert hook.entered.wait(WAIT_S)
        sink.commit([transition(context("two"))])
        sink.commit([transition(context("three"))])

        def value(name: str, worker: str) -> float | None:
            return registry.get_sample_value(name, {"worker": worker})

        assert value("dowguard_handoff_dropped_total", "enforcement") == 1.0
        assert value("dowguard_handoff_backlog", "enforcement") == 2.0
        assert sink.handoffs["forwarding"].wait_idle(WAIT_S)
        assert value("dowguard_handoff_backlog", "forwarding") == 0.0
    finally:
        hook.go.set()
        sink.close()
    # Closed, the hand-offs are no longer exported.
    gone = {"worker": "enforcement"}
    assert registry.get_sample_value("dowguard_handoff_backlog", gone) is None


def test_silenced_alerts_are_forwarded_but_not_enforced() -> None:
    hook = HeldHook(WAIT_S)
    hook.go.set()
    log = MemoryActionLog()
    quiet, loud = transition(context("quiet")), transition(context("loud"))
    asked: list[list[str]] = []

    def silenced(fingerprints: Sequence[str]) -> set[str]:
        asked.append(list(fingerprints))
        return {quiet.fingerprint}

    recorder = Recorder()
    sink = AfterStore(
        MemorySink(),
        enforcer=Enforcer(hook, Policy(), log),
        forwarder=recorder,
        silenced=silenced,
    )
    sink.start()
    try:
        sink.commit([quiet, loud])
        assert sink.wait_idle(WAIT_S)
    finally:
        sink.close()
    assert asked == [[quiet.fingerprint, loud.fingerprint]]
    assert hook.calls == [("throttle", "loud")]
    assert recorder.sent == [quiet.fingerprint, loud.fingerprint]


def test_resume_hands_stored_alerts_to_the_enforcer_only() -> None:
    hook = HeldHook(WAIT_S)
    hook.go.set()
    log = MemoryActionLog()
    recorder = Recorder()
    sink = AfterStore(
        MemorySink(), enforcer=Enforcer(hook, Policy(), log), forwarder=recorder
    )
    sink.start()
    alert = transition(context("orders"))
    try:
        sink.resume([alert])
        sink.resume([alert])
        assert sink.wait_idle(WAIT_S)
    finally:
        sink.close()
    assert hook.calls == [("throttle", "orders")]
    assert recorder.sent == []
