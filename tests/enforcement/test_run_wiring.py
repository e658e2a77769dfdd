"""What ``dowguard run --kafka`` reads from the store for its enforcer."""

from __future__ import annotations

import time
from pathlib import Path

from api.store import Matcher, SqlStore
from detector.alerts import RESOLVED, WARNING
from dowguard.cli import recent_critical_alerts, silenced_alerts

from .conftest import context, transition


def _store(tmp_path: Path) -> SqlStore:
    store = SqlStore(f"sqlite:///{tmp_path}/run.db")
    store.ensure_schema()
    return store


def test_recent_critical_alerts_are_the_firing_unsilenced_recent_ones(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    now = time.time()
    recent = transition(context("recent"), starts_at=now - 30)
    old = transition(context("old"), starts_at=now - 7_200)
    warning = transition(context("warned"), severity=WARNING, starts_at=now - 30)
    ended = transition(context("ended"), starts_at=now - 30)
    over = transition(context("ended"), event=RESOLVED, starts_at=now - 30, seq=2)
    muted = transition(context("muted"), starts_at=now - 30)
    store.commit([recent, old, warning, ended, over, muted])
    store.create_silence(
        [Matcher("function", "muted")], now - 60, now + 3_600, "alice", "deploying"
    )
    try:
        found = recent_critical_alerts(store, now - 900)
        assert silenced_alerts(store, [recent.fingerprint, muted.fingerprint]) == {
            muted.fingerprint
        }
    finally:
        store.close()
    (again,) = found
    assert (again.fingerprint, again.kind, again.severity) == (
        recent.fingerprint,
        recent.kind,
        recent.severity,
    )
    assert (again.context, again.starts_at) == (recent.context, recent.starts_at)
    # The policy needs the evidence to act on the alert again.
    assert again.evidence == recent.evidence
    assert again.summary == recent.summary
