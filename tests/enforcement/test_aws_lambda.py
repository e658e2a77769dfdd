"""The AWS Lambda hook against moto's server, and against failing stand-ins.

moto lacks the recursion config; that path runs against a local stand-in.
"""

from __future__ import annotations

import pytest

from detector.alerts import RESOLVED
from detector.enforcement import Enforcer, HookError, MemoryActionLog, Policy
from detector.enforcement.audit import FAILED, SKIPPED, SUCCEEDED
from detector.enforcement.aws_lambda import AwsLambdaHook, lambda_clients
from detector.enforcement.breaker import CircuitBreaker

from .conftest import FakeClock, MotoAccount, context, transition
from .receivers import FailingPlatform
from .recursion_standin import RecursionStandin

pytestmark = pytest.mark.aws


def _hook(moto: MotoAccount, **options: object) -> AwsLambdaHook:
    return AwsLambdaHook(lambda_clients(moto.url), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("reserved", [None, 7])
def test_throttle_then_release_leaves_the_function_as_it_was(
    moto: MotoAccount, reserved: int | None
) -> None:
    ctx = moto.function("resize", reserved=reserved)
    hook = _hook(moto)
    before = hook.read(ctx)
    previous = hook.throttle(ctx, "test")
    assert moto.reserved("resize") == 0
    assert previous["reserved_concurrency"] == reserved
    hook.release(ctx, previous)
    assert moto.reserved("resize") == reserved
    assert hook.read(ctx) == before


def test_throttling_twice_keeps_the_original_previous_state(moto: MotoAccount) -> None:
    ctx = moto.function("resize")
    hook = _hook(moto)
    first = hook.throttle(ctx, "first")
    second = hook.throttle(ctx, "again")
    assert first == second
    assert second["reserved_concurrency"] is None
    hook.release(ctx, second)
    assert moto.reserved("resize") is None


def test_ceiling_caps_but_never_raises_concurrency(moto: MotoAccount) -> None:
    free = moto.function("free")
    low = moto.function("low", reserved=3)
    hook = _hook(moto, ceiling=5)
    hook.throttle(free, "cap")
    hook.throttle(low, "cap")
    assert (moto.reserved("free"), moto.reserved("low")) == (5, 3)


def test_loop_disables_only_enabled_mappings_and_release_restores_them(
    moto: MotoAccount,
) -> None:
    ctx = moto.function("resize")
    polling = moto.queue_mapping("resize", "uploads", enabled=True)
    idle = moto.queue_mapping("resize", "backfill", enabled=False)
    hook = _hook(moto)
    before = moto.mapping_states("resize")
    assert before == {polling: "Enabled", idle: "Disabled"}
    previous = hook.throttle(ctx, "loop", loop=True)
    assert previous["mappings_disabled"] == [polling]
    assert moto.mapping_states("resize") == {polling: "Disabled", idle: "Disabled"}
    hook.release(ctx, previous)
    assert moto.mapping_states("resize") == before
    assert moto.reserved("resize") is None


def test_plain_throttle_leaves_mappings_alone(moto: MotoAccount) -> None:
    ctx = moto.function("resize")
    polling = moto.queue_mapping("resize", "uploads", enabled=True)
    _hook(moto).throttle(ctx, "spike")
    assert moto.mapping_states("resize") == {polling: "Enabled"}


def test_enforcer_loop_alert_throttles_and_manual_release_restores(
    moto: MotoAccount, clock: FakeClock
) -> None:
    ctx = moto.function("resize", reserved=20)
    moto.queue_mapping("resize", "uploads", enabled=True)
    hook = _hook(moto)
    before = hook.read(ctx)
    log = MemoryActionLog()
    enforcer = Enforcer(hook, Policy(), log, clock, sleep=clock.sleep)
    enforcer.on_transitions([transition(ctx, kind="recursive_trigger")])
    (throttle,) = log.find()
    assert throttle.state == SUCCEEDED
    assert throttle.outcome["after"]["reserved_concurrency"] == 0
    assert [m["state"] for m in throttle.outcome["after"]["mappings"]] == ["Disabled"]
    enforcer.on_transitions([transition(ctx, kind="recursive_trigger", event=RESOLVED)])
    clock.advance(7200)
    assert enforcer.tick() == []
    release = enforcer.manual_release(ctx)
    assert release.state == SUCCEEDED
    assert hook.read(ctx) == before


def test_enforcer_ttl_release_on_moto(moto: MotoAccount, clock: FakeClock) -> None:
    ctx = moto.function("thumbs")
    log = MemoryActionLog()
    enforcer = Enforcer(_hook(moto), Policy(release_after_s=600.0), log, clock)
    enforcer.on_transitions([transition(ctx)])
    assert moto.reserved("thumbs") == 0
    clock.advance(600)
    (release,) = enforcer.tick()
    assert release.state == SUCCEEDED
    assert moto.reserved("thumbs") is None


def test_protected_function_is_untouched_on_moto(
    moto: MotoAccount, clock: FakeClock
) -> None:
    ctx = moto.function("payments-api", reserved=50)
    log = MemoryActionLog()
    enforcer = Enforcer(_hook(moto), Policy(protected=("payments-*",)), log, clock)
    enforcer.on_transitions([transition(ctx)])
    assert enforcer.manual_throttle(ctx, "operator").state == SKIPPED
    assert moto.reserved("payments-api") == 50


def test_unknown_function_fails_without_retries(
    moto: MotoAccount, clock: FakeClock
) -> None:
    log = MemoryActionLog()
    enforcer = Enforcer(_hook(moto), Policy(), log, clock, sleep=clock.sleep)
    enforcer.on_transitions([transition(context("ghost"))])
    (rec,) = log.find()
    assert (rec.state, rec.attempts) == (FAILED, 1)
    assert rec.outcome["detail"]["code"] == "ResourceNotFoundException"
    assert clock.sleeps == []


def test_other_account_is_refused(moto: MotoAccount) -> None:
    moto.function("resize")
    hook = _hook(moto, account="123456789012")
    with pytest.raises(HookError, match="manages account") as caught:
        hook.throttle(context("resize", "999999999999"), "wrong account")
    assert caught.value.transient is False
    assert moto.reserved("resize") is None


@pytest.mark.parametrize("failing_platform", [429, 500], indirect=True)
def test_platform_failure_is_retried_then_recorded_failed(
    failing_platform: FailingPlatform, aws_env: None, clock: FakeClock
) -> None:
    hook = AwsLambdaHook(lambda_clients(failing_platform.url))
    log = MemoryActionLog()
    enforcer = Enforcer(hook, Policy(), log, clock, sleep=clock.sleep)
    enforcer.on_transitions([transition(context("resize"))])
    (rec,) = log.find()
    assert (rec.state, rec.attempts) == (FAILED, 4)
    assert rec.outcome["detail"]["status"] == failing_platform.status
    assert rec.outcome["detail"]["transient"] is True
    # One request per attempt: botocore's own retries are off.
    assert failing_platform.count == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_breaker_opens_against_a_failing_platform(
    failing_platform: FailingPlatform, aws_env: None, clock: FakeClock
) -> None:
    hook = AwsLambdaHook(lambda_clients(failing_platform.url))
    breaker = CircuitBreaker(hook.name, failure_threshold=2, clock=clock)
    log = MemoryActionLog()
    enforcer = Enforcer(hook, Policy(), log, clock, sleep=clock.sleep, breaker=breaker)
    enforcer.on_transitions([transition(context("a")), transition(context("b"))])
    assert failing_platform.count == 2
    second = log.find(context=context("b"))[0]
    assert second.state == FAILED and "circuit open" in second.outcome["error"]


def test_unreachable_platform_is_transient(aws_env: None) -> None:
    closed = FailingPlatform(500)
    url = closed.url
    closed.server.server_close()
    hook = AwsLambdaHook(lambda_clients(url, connect_timeout_s=1.0))
    with pytest.raises(HookError) as caught:
        hook.read(context("resize"))
    assert caught.value.transient is True


@pytest.mark.parametrize("before", ["Allow", "Terminate"])
def test_recursion_config_is_set_to_terminate_and_restored(
    moto: MotoAccount, recursion_standin: RecursionStandin, before: str
) -> None:
    ctx = moto.function("resize")
    recursion_standin.config["resize"] = before
    hook = _hook(
        moto,
        recursion_terminate=True,
        recursion_clients=lambda_clients(recursion_standin.url),
    )
    previous = hook.throttle(ctx, "loop", loop=True)
    assert previous["recursive_loop"] == before
    assert recursion_standin.config["resize"] == "Terminate"
    hook.release(ctx, previous)
    assert recursion_standin.config["resize"] == before
    puts = [r for r in recursion_standin.requests if r[0] == "PUT"]
    if before == "Terminate":
        assert puts == []
    else:
        assert [r[2] for r in puts] == [
            {"RecursiveLoop": "Terminate"},
            {"RecursiveLoop": "Allow"},
        ]
    assert hook.read(ctx)["recursive_loop"] == before
