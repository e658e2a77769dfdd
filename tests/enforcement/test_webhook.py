"""The webhook hook against a loopback receiver that checks every signature."""

from __future__ import annotations

import pytest

from detector.enforcement import Enforcer, HookError, MemoryActionLog, Policy
from detector.enforcement.audit import FAILED, SUCCEEDED
from detector.enforcement.webhook import WebhookHook, sign

from .conftest import WEBHOOK_SECRET, FakeClock, context, transition
from .receivers import WebhookReceiver


def _hook(receiver: WebhookReceiver, clock: FakeClock) -> WebhookHook:
    return WebhookHook(receiver.url, WEBHOOK_SECRET, timeout_s=5.0, clock=clock)


def test_signature_is_hex_hmac_of_timestamp_dot_body() -> None:
    # Worked out with `openssl dgst -sha256 -hmac key` on '1700000000.{"a":1}'.
    expected = "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
    assert sign("key", "1700000000", b'{"a":1}') == expected


def test_throttle_posts_a_signed_body_and_returns_the_answer(
    receiver: WebhookReceiver, clock: FakeClock
) -> None:
    hook = _hook(receiver, clock)
    ctx = context("orders")
    previous = hook.throttle(ctx, "spend 40x baseline", loop=True)
    (call,) = receiver.calls
    assert call["valid"]
    assert call["timestamp"] == str(int(clock.now))
    assert call["body"]["action"] == "throttle"
    assert call["body"]["context"]["function"] == "orders"
    assert call["body"]["key"] == ctx.key().decode()
    assert call["body"]["loop"] is True
    assert previous == {
        "status": 200,
        "body": {"accepted": "throttle", "replicas_before": 4},
    }
    assert hook.read(ctx)["throttled"] is True


def test_release_sends_the_previous_state_back(
    receiver: WebhookReceiver, clock: FakeClock
) -> None:
    hook = _hook(receiver, clock)
    ctx = context("orders")
    previous = hook.throttle(ctx, "spike")
    hook.release(ctx, previous)
    assert receiver.calls[1]["valid"]
    assert receiver.calls[1]["body"]["action"] == "release"
    assert receiver.calls[1]["body"]["previous"] == previous
    assert hook.read(ctx)["throttled"] is False


def test_wrong_secret_is_refused_by_the_receiver(
    receiver: WebhookReceiver, clock: FakeClock
) -> None:
    hook = WebhookHook(receiver.url, "not-the-secret", clock=clock)
    with pytest.raises(HookError, match="answered 401") as caught:
        hook.throttle(context("orders"), "spike")
    assert caught.value.transient is False
    assert caught.value.detail["body"] == {"error": "bad signature"}
    assert receiver.calls[0]["valid"] is False


@pytest.mark.parametrize("receiver", [(2, 503)], indirect=True)
def test_enforcer_retries_a_failing_receiver(
    receiver: WebhookReceiver, clock: FakeClock
) -> None:
    log = MemoryActionLog()
    enforcer = Enforcer(_hook(receiver, clock), Policy(), log, clock, sleep=clock.sleep)
    enforcer.on_transitions([transition(context("orders"))])
    (rec,) = log.find()
    assert (rec.state, rec.attempts) == (SUCCEEDED, 3)
    assert len(receiver.calls) == 3
    assert all(call["valid"] for call in receiver.calls)
    assert rec.previous["status"] == 200
    assert rec.outcome["after"]["last_answer"]["status"] == 200
    assert clock.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("receiver", [(100, 400)], indirect=True)
def test_client_error_from_the_receiver_is_not_retried(
    receiver: WebhookReceiver, clock: FakeClock
) -> None:
    log = MemoryActionLog()
    enforcer = Enforcer(_hook(receiver, clock), Policy(), log, clock, sleep=clock.sleep)
    enforcer.on_transitions([transition(context("orders"))])
    (rec,) = log.find()
    assert (rec.state, rec.attempts) == (FAILED, 1)
    assert rec.outcome["detail"]["status"] == 400
    assert rec.outcome["detail"]["body"] == {"error": "not now"}
    assert len(receiver.calls) == 1


def test_unreachable_receiver_is_transient(clock: FakeClock) -> None:
    closed = WebhookReceiver(WEBHOOK_SECRET)
    url = closed.url
    closed.server.server_close()
    hook = WebhookHook(url, WEBHOOK_SECRET, timeout_s=1.0, clock=clock)
    with pytest.raises(HookError, match="no answer") as caught:
        hook.throttle(context("orders"), "spike")
    assert caught.value.transient is True
