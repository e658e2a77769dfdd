"""The dry run of enforcement over a replay, and ``dowguard run`` without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.alerts import RESOLVED, WARNING
from detector.enforcement.audit import RELEASE, SUCCEEDED, THROTTLE
from detector.enforcement.rehearsal import Rehearsal
from dowguard import cli
from dowguard.config import Settings
from dowguard.errors import ConfigError

from .conftest import context, transition

T0 = 1_772_400_000.0


def test_rehearsal_acts_and_releases_on_event_time() -> None:
    rehearsal = Rehearsal(Settings(enforcement_tick_s=10.0))
    ctx = context("resize")
    rehearsal.observe(transition(ctx, starts_at=T0, seq=1))
    rehearsal.observe(transition(context("thumbs"), severity=WARNING, starts_at=T0))
    rehearsal.observe(transition(ctx, event=RESOLVED, starts_at=T0, seq=3))
    resolved_at = T0 + 30.0
    # The release is due a recovery hold (300 s) after the alert resolved.
    rehearsal.advance(resolved_at + 290.0)
    assert [(r.verb, r.state) for r in rehearsal.actions()] == [(THROTTLE, SUCCEEDED)]
    rehearsal.advance(resolved_at + 310.0)
    throttle, release = rehearsal.actions()
    assert (throttle.verb, throttle.created_at) == (THROTTLE, T0 + 10.0)
    assert release.verb == RELEASE and release.state == SUCCEEDED
    assert resolved_at + 300.0 <= release.created_at <= resolved_at + 310.0
    assert release.reason == "automatic release: recovered"
    assert {r.hook for r in rehearsal.actions()} == {"dry_run"}


def test_rehearsal_is_dry_whatever_the_settings_say() -> None:
    settings = Settings(
        enforcement_mode="webhook",
        enforcement_webhook_url="http://127.0.0.1:9/never",
        enforcement_webhook_secret="unused",
    )
    rehearsal = Rehearsal(settings)
    rehearsal.observe(transition(context("resize"), starts_at=T0))
    (rec,) = rehearsal.actions()
    assert (rec.hook, rec.state) == ("dry_run", SUCCEEDED)


def test_a_tick_interval_of_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="enforcement_tick_s must be positive"):
        Rehearsal(Settings(enforcement_tick_s=0.0))


@pytest.mark.slow
def test_run_without_a_broker_prints_the_alerts_then_the_dry_run_actions(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOWGUARD_CONFIG", raising=False)
    # A real hook in the settings must not be used for the past.
    monkeypatch.setenv("DOWGUARD_ENFORCEMENT_MODE", "aws_lambda")
    monkeypatch.setenv("DOWGUARD_ENFORCEMENT_AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    recording = str(cli.BUNDLED_RECORDING)
    assert cli.main(["replay", recording, "--no-store"]) == 0
    alerts = capsys.readouterr().out.splitlines()
    db = f"sqlite:///{tmp_path}/run.db"
    assert cli.main(["run", "--database-url", db]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert alerts and lines[: len(alerts)] == alerts
    header, *actions = lines[len(alerts) :]
    assert header.startswith("dry-run enforcement, nothing was touched")
    shown = [line.split()[1:4] for line in actions]
    where = "111122223333/us-east-1/{}:$LATEST"
    assert shown == [
        ["THROTTLE", "succeeded", where.format("image-resize")],
        ["THROTTLE", "succeeded", where.format("order-processor")],
        ["RELEASE", "succeeded", where.format("image-resize")],
    ]
