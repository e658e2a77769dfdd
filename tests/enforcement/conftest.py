"""Fixtures of the enforcement tests: stand-ins, a fake clock, alert transitions.

moto's server and its fixtures live in ``tests/moto_server.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from detector.alerts import CRITICAL, OPENED, Transition, fingerprint
from ingest.events import Context
from tests.moto_server import ACCOUNT, REGION, MotoAccount, context

from .receivers import FailingPlatform, WebhookReceiver
from .recursion_standin import RecursionStandin

__all__ = ["ACCOUNT", "REGION", "MotoAccount", "context"]


class FakeClock:
    """A clock tests move by hand; ``sleep`` records and advances it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def transition(
    ctx: Context,
    *,
    kind: str = "cost_spike",
    event: str = OPENED,
    severity: str = CRITICAL,
    starts_at: float = 1_799_999_000.0,
    seq: int = 1,
    evidence: dict[str, Any] | None = None,
) -> Transition:
    """An alert transition as the detector would emit it."""
    return Transition(
        event=event,
        fingerprint=fingerprint(ctx, kind),
        kind=kind,
        severity=severity,
        context=ctx,
        starts_at=starts_at,
        at=starts_at + 10.0 * seq,
        seq=seq,
        cost_usd=1.5,
        summary=f"{ctx.function}: test alert",
        evidence={"source": "invocations", "ratio": 40.0}
        if evidence is None
        else evidence,
    )


@pytest.fixture
def recursion_standin() -> Iterator[RecursionStandin]:
    standin = RecursionStandin()
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
def failing_platform(request: pytest.FixtureRequest) -> Iterator[FailingPlatform]:
    """A platform that always fails; parametrise indirectly with the status."""
    platform = FailingPlatform(getattr(request, "param", 429))
    platform.start()
    yield platform
    platform.stop()


WEBHOOK_SECRET = "test-secret-for-hmac"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[WebhookReceiver]:
    """A webhook receiver; parametrise indirectly with ``(fail_first, status)``."""
    fail_first, status = getattr(request, "param", (0, 503))
    server = WebhookReceiver(WEBHOOK_SECRET, fail_first, status)
    server.start()
    yield server
    server.stop()
