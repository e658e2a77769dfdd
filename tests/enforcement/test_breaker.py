"""The circuit breaker opens, lets one trial through, and closes again."""

from __future__ import annotations

from detector.enforcement.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

from .conftest import FakeClock


def test_breaker_opens_after_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker("hook", failure_threshold=3, reset_after_s=60, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN
    assert not breaker.allow()


def test_half_open_breaker_allows_one_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker("hook", failure_threshold=1, reset_after_s=60, clock=clock)
    breaker.failure()
    clock.advance(59)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.state == HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow()


def test_failed_trial_opens_the_breaker_again(clock: FakeClock) -> None:
    breaker = CircuitBreaker("hook", failure_threshold=2, reset_after_s=30, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.advance(30)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN
    clock.advance(29)
    assert not breaker.allow()
