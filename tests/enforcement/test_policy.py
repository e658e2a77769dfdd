"""The safety policy's rules, on hand-made alerts and action records."""

from __future__ import annotations

import pytest

from detector.alerts import WARNING
from detector.enforcement.audit import (
    FAILED,
    REJECTED,
    SKIPPED,
    SUCCEEDED,
    THROTTLE,
    ActionRecord,
    new_action_id,
)
from detector.enforcement.policy import Policy

from .conftest import context, transition

NOW = 1_800_000_000.0


def _action(
    function: str,
    *,
    account: str = "123456789012",
    ago: float = 60.0,
    state: str = SUCCEEDED,
    attempts: int = 1,
    outcome: dict[str, object] | None = None,
) -> ActionRecord:
    return ActionRecord(
        id=new_action_id(),
        key=new_action_id(),
        fingerprint="0" * 16,
        context=context(function, account),
        verb=THROTTLE,
        hook="dry_run",
        state=state,
        reason="test",
        created_at=NOW - ago,
        updated_at=NOW - ago,
        attempts=attempts,
        outcome=dict(outcome or {}),
    )


@pytest.mark.parametrize(
    ("pattern", "function", "account", "protected"),
    [
        ("payments-*", "payments-api", "1", True),
        ("payments-*", "orders", "1", False),
        ("999/*", "orders", "999", True),
        ("999/*", "orders", "111", False),
        ("aws/*/us-east-1/orders/*", "orders", "111", True),
        ("aws/*/eu-west-1/orders/*", "orders", "111", False),
    ],
)
def test_is_protected_matches_function_account_or_full_key(
    pattern: str, function: str, account: str, protected: bool
) -> None:
    policy = Policy(protected=(pattern,))
    assert policy.is_protected(context(function, account)) is protected


def test_protected_pattern_with_two_slashes_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 0, 1 or 4"):
        Policy(protected=("a/b/c",))


def test_unqualified_refuses_warnings_and_alerts_without_evidence() -> None:
    policy = Policy()
    ctx = context("orders")
    assert policy.unqualified(transition(ctx)) is None
    assert "below critical" in str(
        policy.unqualified(transition(ctx, severity=WARNING))
    )
    assert "no evidence" in str(policy.unqualified(transition(ctx, evidence={})))


def test_unqualified_applies_evidence_sources_and_minimums() -> None:
    ctx = context("orders")
    trusted = Policy(evidence_sources=frozenset({"traces"}))
    assert "not trusted" in str(trusted.unqualified(transition(ctx)))
    strict = Policy(evidence_minimums={"ratio": 50.0, "hops": 4})
    assert "ratio=40.0" in str(strict.unqualified(transition(ctx)))
    loud = transition(ctx, evidence={"source": "invocations", "ratio": 60.0})
    assert strict.unqualified(loud) is None


def test_refusal_holds_the_global_hourly_limit() -> None:
    policy = Policy(max_actions_per_hour=3, max_actions_per_hour_per_account=10)
    recent = [_action(f"f{i}", account=str(i)) for i in range(3)]
    refusal = policy.refusal(context("other", "77"), recent, NOW)
    assert refusal is not None and refusal.rule == "hourly_limit"
    # The same actions an hour and a bit ago no longer count.
    old = [_action(f"f{i}", account=str(i), ago=3700.0) for i in range(3)]
    assert policy.refusal(context("other", "77"), old, NOW) is None


def test_refusal_holds_the_account_limit_for_that_account_only() -> None:
    policy = Policy(max_actions_per_hour=10, max_actions_per_hour_per_account=2)
    recent = [_action("a", account="1"), _action("b", account="1")]
    refusal = policy.refusal(context("c", "1"), recent, NOW)
    assert refusal is not None and refusal.rule == "account_limit"
    assert policy.refusal(context("c", "2"), recent, NOW) is None


def test_refusal_ignores_actions_that_touched_nothing() -> None:
    policy = Policy(max_actions_per_hour=1)
    recent = [
        _action("a", state=SKIPPED, attempts=0),
        _action("b", state=REJECTED, attempts=0),
        _action("c", state=FAILED, attempts=0),
    ]
    assert policy.refusal(context("d"), recent, NOW) is None
    reached = [_action("c", state=FAILED, attempts=2)]
    assert policy.refusal(context("d"), reached, NOW) is not None


def test_refusal_applies_the_cooldown_per_context() -> None:
    policy = Policy(cooldown_s=900.0)
    recent = [_action("orders", ago=600.0)]
    refusal = policy.refusal(context("orders"), recent, NOW)
    assert refusal is not None and refusal.rule == "cooldown"
    assert policy.refusal(context("billing"), recent, NOW) is None
    assert (
        policy.refusal(context("orders"), [_action("orders", ago=901.0)], NOW) is None
    )


def test_manual_refusal_only_protects() -> None:
    policy = Policy(max_actions_per_hour=0, protected=("vault",))
    assert policy.refusal(context("orders"), [], NOW, manual=True) is None
    refusal = policy.refusal(context("vault"), [], NOW, manual=True)
    assert refusal is not None and refusal.rule == "protected"


def test_release_due_after_ttl_or_recovery_hold() -> None:
    policy = Policy(release_after_s=3600.0, recovery_hold_s=300.0)
    done = _action("orders", ago=0.0)
    assert policy.release_due(done) == NOW + 3600.0
    done.outcome["recovered_at"] = NOW + 100.0
    assert policy.release_due(done) == NOW + 400.0
    assert Policy(release_after_s=None).release_due(_action("x", ago=0.0)) is None


def test_release_due_leaves_loops_and_manual_throttles_alone() -> None:
    policy = Policy()
    assert policy.release_due(_action("a", outcome={"loop": True})) is None
    assert policy.release_due(_action("a", outcome={"manual": True})) is None
    looping = Policy(auto_release_loops=True)
    assert looping.release_due(_action("a", outcome={"loop": True})) is not None


def test_release_due_counts_a_half_done_throttle_only_if_it_changed_something() -> None:
    policy = Policy()
    failed = _action("a", state=FAILED)
    assert policy.release_due(failed) is None
    failed.previous = {"reserved_concurrency": None}
    assert policy.release_due(failed) is not None
