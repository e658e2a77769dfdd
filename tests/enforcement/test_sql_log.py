"""The enforcer on the SQL action log the API reads (SQLite in a temp dir)."""

from __future__ import annotations

from pathlib import Path

from api.store import SqlActionLog, SqlStore
from detector.alerts import UPDATED
from detector.enforcement import Enforcer, Policy
from detector.enforcement.audit import RELEASE, SKIPPED, SUCCEEDED, THROTTLE
from detector.enforcement.dryrun import DryRunHook

from .conftest import FakeClock, context, transition


def _log(tmp_path: Path, clock: FakeClock) -> SqlActionLog:
    store = SqlStore(f"sqlite:///{tmp_path}/actions.db", clock=clock)
    store.create_all()
    return SqlActionLog(store)


def test_cycle_survives_a_restart_on_the_sql_log(
    tmp_path: Path, clock: FakeClock
) -> None:
    log = _log(tmp_path, clock)
    policy = Policy(release_after_s=600.0, max_actions_per_hour=2)
    first = Enforcer(DryRunHook(), policy, log, clock)
    alerts = [transition(context(f"fn-{i}")) for i in range(3)]
    first.on_transitions(alerts)
    # A new process on the same database sees the same history.
    second = Enforcer(DryRunHook(), policy, log, clock)
    second.on_transitions([*alerts, transition(context("fn-0"), event=UPDATED)])
    states = sorted((r.context.function, r.verb, r.state) for r in log.find())
    assert states == [
        ("fn-0", THROTTLE, SUCCEEDED),
        ("fn-1", THROTTLE, SUCCEEDED),
        ("fn-2", THROTTLE, SKIPPED),
    ]
    clock.advance(600)
    released = second.tick()
    assert sorted(r.context.function for r in released) == ["fn-0", "fn-1"]
    assert all(r.verb == RELEASE and r.state == SUCCEEDED for r in released)
    assert second.tick() == []
    throttles = log.find(state=SUCCEEDED)
    assert {r.outcome.get("released_by") for r in throttles if r.verb == THROTTLE} == {
        r.id for r in released
    }
