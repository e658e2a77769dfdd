"""The enforcer's decisions, idempotency, retries and releases.

A scripted hook plays the platform; time is a fake clock, sleeps advance it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from detector.alerts import RESOLVED, UPDATED, WARNING, FunctionStatus
from detector.enforcement import (
    ActionConflict,
    Enforcer,
    HookError,
    MemoryActionLog,
    Policy,
    UnknownAction,
    build_enforcer,
)
from detector.enforcement.audit import (
    APPROVED,
    ATTEMPTING,
    FAILED,
    PENDING_APPROVAL,
    REJECTED,
    RELEASE,
    SKIPPED,
    SUCCEEDED,
    THROTTLE,
    ActionRecord,
    new_action_id,
)
from detector.enforcement.breaker import CircuitBreaker
from detector.enforcement.dryrun import DryRunHook
from dowguard.config import Settings
from dowguard.errors import ConfigError, StorageError
from ingest.events import Context

from .conftest import FakeClock, context, transition


class ScriptedHook:
    """Answers like a platform would, failing as told, and notes each call."""

    name = "scripted"

    def __init__(self, log: MemoryActionLog, failures: list[Exception] | None = None):
        self.log = log
        self.failures = list(failures or [])
        self.calls: list[tuple[str, Context, Any]] = []
        #: The states the log held for the context when each call came in.
        self.logged: list[list[str]] = []

    def throttle(
        self, context: Context, reason: str, *, loop: bool = False
    ) -> dict[str, Any]:
        self._called("throttle", context, loop)
        return {"reserved_concurrency": None, "seen_calls": len(self.calls)}

    def release(self, context: Context, previous: dict[str, Any]) -> None:
        self._called("release", context, previous)

    def read(self, context: Context) -> dict[str, Any]:
        return {"calls": len(self.calls)}

    def verbs(self) -> list[str]:
        return [verb for verb, _, _ in self.calls]

    def _called(self, verb: str, context: Context, arg: Any) -> None:
        self.calls.append((verb, context, arg))
        self.logged.append([r.state for r in self.log.find(context=context)])
        if self.failures:
            raise self.failures.pop(0)


def _busy() -> HookError:
    return HookError("platform: 429 TooManyRequestsException", transient=True)


def _enforcer(
    clock: FakeClock,
    hook: ScriptedHook | None = None,
    log: MemoryActionLog | None = None,
    **policy: Any,
) -> tuple[Enforcer, ScriptedHook, MemoryActionLog]:
    log = log if log is not None else MemoryActionLog()
    hook = hook if hook is not None else ScriptedHook(log)
    enforcer = Enforcer(hook, Policy(**policy), log, clock, sleep=clock.sleep)
    return enforcer, hook, log


def test_critical_alert_is_recorded_before_the_hook_is_called(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock)
    enforcer.on_transitions([transition(context("orders"))])
    assert hook.verbs() == ["throttle"]
    assert hook.logged == [[ATTEMPTING]]
    (rec,) = log.find()
    assert (rec.verb, rec.state, rec.attempts) == (THROTTLE, SUCCEEDED, 1)
    assert rec.previous == {"reserved_concurrency": None, "seen_calls": 1}
    assert rec.outcome["after"] == {"calls": 1}


def test_an_alert_delivered_twice_causes_one_action(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock)
    opened = transition(context("orders"))
    enforcer.on_transitions([opened])
    enforcer.on_transitions([opened])
    enforcer.on_transitions([transition(context("orders"), event=UPDATED, seq=2)])
    assert hook.verbs() == ["throttle"]
    assert len(log.find()) == 1


def test_restarted_enforcer_on_the_same_log_does_not_act_again(
    clock: FakeClock,
) -> None:
    log = MemoryActionLog()
    first, first_hook, _ = _enforcer(clock, log=log)
    opened = transition(context("orders"))
    first.on_transitions([opened])
    second, second_hook, _ = _enforcer(clock, log=log)
    second.on_transitions([opened])
    assert first_hook.verbs() == ["throttle"] and second_hook.verbs() == []
    clock.advance(3601)
    (release,) = second.tick()
    assert release.state == SUCCEEDED
    assert second_hook.calls[0][2] == {"reserved_concurrency": None, "seen_calls": 1}


def test_an_episode_whose_start_moves_earlier_causes_one_action(
    clock: FakeClock,
) -> None:
    enforcer, hook, log = _enforcer(clock, release_after_s=60.0)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx, starts_at=1_000.0)])
    clock.advance(60)
    assert len(enforcer.tick()) == 1
    # The same episode, its start moved earlier by evidence read late, and
    # an old transition of it delivered again: nothing more is done.
    enforcer.on_transitions(
        [
            transition(ctx, event=UPDATED, starts_at=960.0, seq=2),
            transition(ctx, starts_at=1_000.0),
        ]
    )
    assert hook.verbs() == ["throttle", "release"]
    assert len(log.find()) == 2
    # A new episode, after this one resolved, is acted on again.
    clock.advance(1_000)
    enforcer.on_transitions([transition(ctx, starts_at=5_000.0)])
    assert hook.verbs() == ["throttle", "release", "throttle"]


def test_a_resolve_with_an_earlier_start_schedules_the_release(
    clock: FakeClock,
) -> None:
    enforcer, _, log = _enforcer(clock, release_after_s=None, recovery_hold_s=60.0)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx, starts_at=1_000.0)])
    enforcer.on_transitions([transition(ctx, event=RESOLVED, starts_at=960.0, seq=5)])
    (throttle,) = log.find(state=SUCCEEDED)
    assert "recovered_at" in throttle.outcome


def test_warning_and_evidence_free_alerts_cause_nothing(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock)
    enforcer.on_transitions(
        [
            transition(context("a"), severity=WARNING),
            transition(context("b"), evidence={}),
        ]
    )
    assert hook.calls == [] and log.find() == []


def test_escalation_within_an_episode_is_acted_on(clock: FakeClock) -> None:
    enforcer, hook, _ = _enforcer(clock)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx, severity=WARNING)])
    enforcer.on_transitions([transition(ctx, event=UPDATED, seq=2)])
    assert hook.verbs() == ["throttle"]


def test_protected_context_is_never_touched(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock, protected=("payments-*",))
    ctx = context("payments-api")
    enforcer.on_transitions([transition(ctx)])
    enforcer.on_transitions([transition(ctx, event=UPDATED, seq=2)])
    manual = enforcer.manual_throttle(ctx, "operator asked")
    assert hook.calls == []
    assert manual.state == SKIPPED
    assert [r.state for r in log.find()] == [SKIPPED, SKIPPED]


def test_hourly_limit_holds_under_a_burst_of_alerts(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(
        clock, max_actions_per_hour=4, max_actions_per_hour_per_account=100
    )
    burst = [transition(context(f"fn-{i}")) for i in range(25)]
    enforcer.on_transitions(burst)
    enforcer.on_transitions(burst)
    assert hook.verbs().count("throttle") == 4
    skipped = log.find(state=SKIPPED)
    assert len(skipped) == 21
    assert all("per hour" in r.outcome["skipped"] for r in skipped)
    # An hour later the same, still open alerts may act again.
    clock.advance(3601)
    enforcer.on_transitions([transition(context("fn-24"), event=UPDATED, seq=2)])
    assert hook.verbs().count("throttle") == 5


def test_account_limit_leaves_other_accounts_free(clock: FakeClock) -> None:
    enforcer, hook, _ = _enforcer(clock, max_actions_per_hour_per_account=2)
    enforcer.on_transitions([transition(context(f"a{i}", "111")) for i in range(4)])
    enforcer.on_transitions([transition(context("b", "222"))])
    accounts = [ctx.account for _, ctx, _ in hook.calls]
    assert accounts == ["111", "111", "222"]


def test_cooldown_blocks_a_quick_second_throttle(clock: FakeClock) -> None:
    enforcer, hook, _ = _enforcer(clock, cooldown_s=900.0, release_after_s=60.0)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx, starts_at=1.0)])
    clock.advance(61)
    enforcer.tick()
    enforcer.on_transitions([transition(ctx, starts_at=2.0)])
    assert hook.verbs() == ["throttle", "release"]
    clock.advance(900)
    enforcer.on_transitions([transition(ctx, starts_at=3.0)])
    assert hook.verbs() == ["throttle", "release", "throttle"]


def test_second_alert_on_a_throttled_context_is_skipped(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    enforcer.on_transitions([transition(ctx, kind="recursive_trigger")])
    assert hook.verbs() == ["throttle"]
    assert "already throttled" in log.find(state=SKIPPED)[0].outcome["skipped"]


def test_approval_mode_waits_then_approve_acts(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock, approval=True)
    enforcer.on_transitions([transition(context("orders"))])
    (pending,) = log.find()
    assert pending.state == PENDING_APPROVAL and hook.calls == []
    done = enforcer.approve(pending.id, by="alice")
    assert done.state == SUCCEEDED and done.outcome["approved_by"] == "alice"
    assert hook.verbs() == ["throttle"]
    with pytest.raises(ActionConflict, match="succeeded"):
        enforcer.approve(pending.id)
    with pytest.raises(UnknownAction):
        enforcer.reject("no-such-id")


def test_rejected_action_never_runs(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock, approval=True)
    enforcer.on_transitions([transition(context("orders"))])
    rejected = enforcer.reject(log.find()[0].id, by="bob")
    assert rejected.state == REJECTED
    assert log.get(rejected.id).state == REJECTED  # type: ignore[union-attr]
    assert hook.calls == []


def test_resolved_alert_cancels_its_pending_approval(clock: FakeClock) -> None:
    enforcer, _, log = _enforcer(clock, approval=True)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    enforcer.on_transitions([transition(ctx, event=RESOLVED, seq=2)])
    (rec,) = log.find()
    assert rec.state == SKIPPED and "before approval" in rec.outcome["skipped"]
    with pytest.raises(ActionConflict):
        enforcer.approve(rec.id)


def test_ttl_release_restores_what_the_throttle_found(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock, release_after_s=600.0)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    clock.advance(599)
    assert enforcer.tick() == []
    clock.advance(1)
    (release,) = enforcer.tick()
    assert enforcer.tick() == []
    throttle = log.find(context=ctx)[0]
    assert hook.verbs() == ["throttle", "release"]
    assert hook.calls[1][2] == throttle.previous
    assert release.verb == RELEASE and release.state == SUCCEEDED
    assert release.outcome["throttle_id"] == throttle.id
    assert throttle.outcome["released_by"] == release.id


def test_resolved_alert_schedules_release_after_the_hold(clock: FakeClock) -> None:
    enforcer, hook, _ = _enforcer(clock, release_after_s=None, recovery_hold_s=300.0)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    assert enforcer.tick() == []
    enforcer.on_transitions([transition(ctx, event=RESOLVED, seq=2)])
    clock.advance(299)
    assert enforcer.tick() == []
    clock.advance(1)
    assert len(enforcer.tick()) == 1
    assert hook.verbs() == ["throttle", "release"]


def test_cost_back_near_baseline_schedules_release(clock: FakeClock) -> None:
    enforcer, _, _ = _enforcer(clock, release_after_s=None, recovery_hold_s=60.0)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    high = FunctionStatus(ctx, clock.now, 50.0, 1.0, 10.0)
    enforcer.on_status([high])
    clock.advance(120)
    assert enforcer.tick() == []
    enforcer.on_status([FunctionStatus(ctx, clock.now, 1.1, 1.0, 1.0)])
    clock.advance(60)
    assert len(enforcer.tick()) == 1


def test_loops_wait_for_a_person(clock: FakeClock) -> None:
    enforcer, hook, _ = _enforcer(clock, release_after_s=60.0)
    ctx = context("resize")
    enforcer.on_transitions([transition(ctx, kind="recursive_trigger")])
    assert hook.calls[0][2] is True
    clock.advance(3600)
    assert enforcer.tick() == []
    released = enforcer.manual_release(ctx, "fixed the bucket trigger")
    assert released.state == SUCCEEDED
    assert hook.verbs() == ["throttle", "release"]


def test_transient_failures_are_retried_with_backoff(clock: FakeClock) -> None:
    log = MemoryActionLog()
    hook = ScriptedHook(log, [_busy(), _busy()])
    enforcer, _, _ = _enforcer(clock, hook=hook, log=log)
    enforcer.on_transitions([transition(context("orders"))])
    (rec,) = log.find()
    assert (rec.state, rec.attempts) == (SUCCEEDED, 3)
    assert clock.sleeps == [0.5, 1.0]


def test_persistent_failure_is_recorded_failed(clock: FakeClock) -> None:
    log = MemoryActionLog()
    hook = ScriptedHook(log, [_busy() for _ in range(10)])
    enforcer, _, _ = _enforcer(clock, hook=hook, log=log)
    enforcer.on_transitions([transition(context("orders"))])
    (rec,) = log.find()
    assert (rec.state, rec.attempts) == (FAILED, 4)
    assert rec.outcome["detail"]["transient"] is True
    assert "TooManyRequests" in rec.outcome["error"]
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_permanent_failure_is_not_retried(clock: FakeClock) -> None:
    log = MemoryActionLog()
    hook = ScriptedHook(log, [HookError("no such function", transient=False)])
    enforcer, _, _ = _enforcer(clock, hook=hook, log=log)
    enforcer.on_transitions([transition(context("ghost"))])
    (rec,) = log.find()
    assert (rec.state, rec.attempts) == (FAILED, 1)
    assert clock.sleeps == []


def test_open_breaker_records_failed_without_calling(clock: FakeClock) -> None:
    log = MemoryActionLog()
    hook = ScriptedHook(log, [_busy() for _ in range(100)])
    breaker = CircuitBreaker("scripted", failure_threshold=3, clock=clock)
    enforcer = Enforcer(hook, Policy(), log, clock, sleep=clock.sleep, breaker=breaker)
    enforcer.on_transitions([transition(context("a"))])
    assert len(hook.calls) == 3
    enforcer.on_transitions([transition(context("b"))])
    assert len(hook.calls) == 3
    rec = log.find(context=context("b"))[0]
    assert rec.state == FAILED and rec.attempts == 0
    assert "circuit open" in rec.outcome["error"]
    # Detection goes on: the breaker's failure never reached the caller, and
    # once it half-opens a working platform is used again.
    hook.failures.clear()
    clock.advance(60)
    enforcer.on_transitions([transition(context("c"))])
    assert log.find(context=context("c"))[0].state == SUCCEEDED


def test_a_crashing_hook_or_log_never_raises_into_the_caller(
    clock: FakeClock,
) -> None:
    log = MemoryActionLog()
    hook = ScriptedHook(log, [RuntimeError("bug in hook")])
    enforcer, _, _ = _enforcer(clock, hook=hook, log=log)
    enforcer.on_transitions([transition(context("orders"))])
    assert log.find()[0].state == FAILED

    class BrokenLog(MemoryActionLog):
        def record(self, rec: ActionRecord) -> bool:
            raise StorageError("database is gone")

    broken, broken_hook, _ = _enforcer(clock, log=BrokenLog())
    broken.on_transitions([transition(context("orders"))])
    assert broken.tick() == []
    assert broken_hook.calls == []


def test_half_done_throttle_keeps_the_state_it_saw_first(clock: FakeClock) -> None:
    log = MemoryActionLog()
    partial = HookError(
        "mapping update failed", transient=False, previous={"reserved": 7}
    )
    hook = ScriptedHook(log, [partial])
    enforcer, _, _ = _enforcer(clock, hook=hook, log=log)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    first = log.find()[0]
    assert first.state == FAILED and first.previous == {"reserved": 7}
    second = enforcer.manual_throttle(ctx, "finish the job")
    assert second.state == SUCCEEDED
    assert second.previous["reserved"] == 7
    assert log.get(first.id).outcome["superseded_by"] == second.id  # type: ignore[union-attr]
    enforcer.manual_release(ctx)
    assert hook.calls[-1][2]["reserved"] == 7


def test_manual_throttle_and_release(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock, max_actions_per_hour=0)
    ctx = context("orders")
    first = enforcer.manual_throttle(ctx, "operator asked", loop=True)
    again = enforcer.manual_throttle(ctx, "operator asked twice")
    assert (first.state, again.state) == (SUCCEEDED, SKIPPED)
    clock.advance(10 * 3600)
    assert enforcer.tick() == []
    released = enforcer.manual_release(ctx)
    assert released.state == SUCCEEDED and released.previous == first.previous
    nothing = enforcer.manual_release(ctx)
    assert nothing.state == SKIPPED
    assert hook.verbs() == ["throttle", "release"]
    assert len(log.find()) == 4


def test_failed_release_is_tried_again_later(clock: FakeClock) -> None:
    log = MemoryActionLog()
    hook = ScriptedHook(log)
    enforcer, _, _ = _enforcer(clock, hook=hook, log=log, release_after_s=60.0)
    enforcer.on_transitions([transition(context("orders"))])
    clock.advance(60)
    hook.failures = [HookError("refused", transient=False)]
    (failed,) = enforcer.tick()
    assert failed.state == FAILED
    clock.advance(10)
    assert enforcer.tick() == []
    clock.advance(300)
    (retried,) = enforcer.tick()
    assert retried.state == SUCCEEDED and retried.key != failed.key
    assert enforcer.tick() == []


def test_stale_attempt_is_marked_failed(clock: FakeClock) -> None:
    enforcer, _, log = _enforcer(clock)
    stuck = ActionRecord(
        "stuck", "k", "", context("orders"), THROTTLE, "scripted", ATTEMPTING,
        "crashed", clock.now, clock.now,
    )  # fmt: skip
    log.record(stuck)
    clock.advance(901)
    enforcer.tick()
    assert log.get("stuck").state == FAILED  # type: ignore[union-attr]


def test_dry_run_records_without_touching(clock: FakeClock) -> None:
    log = MemoryActionLog()
    enforcer = Enforcer(DryRunHook(), Policy(), log, clock)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    (rec,) = log.find()
    assert rec.hook == "dry_run" and rec.state == SUCCEEDED
    assert rec.outcome["after"] == {"dry_run": True, "throttled": True}


def test_build_enforcer_follows_the_settings(clock: FakeClock) -> None:
    log = MemoryActionLog()
    enforcer = build_enforcer(Settings(), log, clock)
    assert enforcer.hook.name == "dry_run" and enforcer.log is log
    tight = Settings(
        enforcement_protected=["vault-*"],
        enforcement_max_per_hour=2,
        enforcement_ttl_s=0,
        enforcement_approval=True,
    )
    policy = build_enforcer(tight, log).policy
    assert policy.protected == ("vault-*",)
    assert (policy.max_actions_per_hour, policy.release_after_s) == (2, None)
    assert policy.approval
    with pytest.raises(ConfigError, match="secret"):
        build_enforcer(
            Settings(enforcement_mode="webhook", enforcement_webhook_url="http://x"),
            log,
        )
    with pytest.raises(ConfigError, match="needs 0, 1 or 4"):
        build_enforcer(Settings(enforcement_protected=["a/b/c"]), log)


def _request(
    clock: FakeClock, ctx: Context, verb: str, state: str = PENDING_APPROVAL
) -> ActionRecord:
    # A request as an API without an enforcer of its own stores it.
    rec = ActionRecord(
        new_action_id(), f"manual:{verb}:{clock.now}", "", ctx, verb, "none",
        state, "operator request", clock.now, clock.now, outcome={"manual": True},
    )  # fmt: skip
    return rec


def test_approving_a_release_request_releases_the_throttle(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock)
    ctx = context("orders")
    throttle = enforcer.manual_throttle(ctx, "operator")
    request = _request(clock, ctx, RELEASE)
    log.record(request)
    done = enforcer.approve(request.id, by="carol")
    assert done.state == SUCCEEDED and done.hook == "scripted"
    assert done.outcome["throttle_id"] == throttle.id
    assert hook.calls[-1] == ("release", ctx, throttle.previous)


def test_tick_carries_out_actions_approved_elsewhere(clock: FakeClock) -> None:
    enforcer, hook, log = _enforcer(clock)
    fresh = _request(clock, context("orders"), THROTTLE, state=APPROVED)
    old = _request(clock, context("billing"), THROTTLE, state=APPROVED)
    old.updated_at -= 901
    old.key += "/old"
    log.record(fresh)
    log.record(old)
    enforcer.tick()
    assert log.get(fresh.id).state == SUCCEEDED  # type: ignore[union-attr]
    assert log.get(old.id).state == SKIPPED  # type: ignore[union-attr]
    assert [ctx.function for _, ctx, _ in hook.calls] == ["orders"]


def test_zero_spend_is_not_taken_for_recovery(clock: FakeClock) -> None:
    enforcer, hook, _ = _enforcer(clock, release_after_s=None, recovery_hold_s=0.0)
    ctx = context("orders")
    enforcer.on_transitions([transition(ctx)])
    enforcer.on_status([FunctionStatus(ctx, clock.now, 0.0, 1.0, 0.0)])
    clock.advance(1)
    assert enforcer.tick() == []
    assert hook.verbs() == ["throttle"]


def test_run_ticks_releases_in_its_thread(clock: FakeClock) -> None:
    enforcer, hook, _ = _enforcer(clock, release_after_s=60.0)
    enforcer.on_transitions([transition(context("orders"))])
    clock.advance(60)
    stop = threading.Event()
    worker = threading.Thread(target=enforcer.run_ticks, args=(stop, 0.01))
    worker.start()
    deadline = time.monotonic() + 10.0
    while hook.verbs() != ["throttle", "release"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    worker.join(timeout=5.0)
    assert hook.verbs() == ["throttle", "release"]
    assert not worker.is_alive()
