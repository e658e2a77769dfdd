"""Forwarding to Alertmanager: the posted shape, silences, resends, a real server."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from api.alertmanager import VALIDITY_INTERVALS, Forwarder
from api.store import Matcher, SqlStore
from detector.alerts import (
    OPENED,
    RESOLVED,
    Transition,
    alert_labels,
    fingerprint,
    rfc3339,
)
from ingest.events import Context
from tests.api.conftest import Alertmanager, FakeClock

CTX = Context("aws", "111122223333", "us-east-1", "resize")
RESEND_S = 30.0


def transition(
    event: str = OPENED, ctx: Context = CTX, seq: int = 1, at: float = 1000.0
) -> Transition:
    return Transition(
        event=event,
        fingerprint=fingerprint(ctx, "recursion"),
        kind="recursion",
        severity="critical",
        context=ctx,
        starts_at=1000.0,
        at=at,
        seq=seq,
        cost_usd=4.5,
        summary="loop via queue q1",
    )


class Capture:
    """A transport that records every posted batch and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/alerts"
        self.batches.append(json.loads(request.content))
        return httpx.Response(self.status)

    def forwarder(self, store: SqlStore | None, clock: FakeClock) -> Forwarder:
        return Forwarder(
            "http://am.invalid:9093/",
            store,
            public_url="https://dow.example",
            resend_s=RESEND_S,
            clock=clock,
            transport=httpx.MockTransport(self),
        )


def test_an_open_alert_is_posted_with_identity_labels(
    store: SqlStore, clock: FakeClock
) -> None:
    cap = Capture()
    t = transition()
    assert cap.forwarder(None, clock).send([t]) == 1
    [alert] = cap.batches[0]
    assert alert["labels"] == alert_labels(CTX, "recursion") | {"severity": "critical"}
    assert alert["annotations"]["summary"] == "loop via queue q1"
    assert alert["startsAt"] == rfc3339(1000.0)
    assert alert["endsAt"] == rfc3339(clock.now + VALIDITY_INTERVALS * RESEND_S)
    assert alert["generatorURL"] == f"https://dow.example/api/v1/alerts/{t.fingerprint}"


def test_a_resolved_alert_ends_at_its_resolve_time(
    store: SqlStore, clock: FakeClock
) -> None:
    cap = Capture()
    forwarder = cap.forwarder(store, clock)
    opened, resolved = transition(), transition(RESOLVED, seq=2, at=1060.0)
    store.commit([opened, resolved])
    forwarder.send([opened, resolved])
    [alert] = cap.batches[0]
    assert alert["endsAt"] == rfc3339(1060.0)


def test_silenced_alerts_are_held_back_but_resolves_go_out(
    store: SqlStore, clock: FakeClock
) -> None:
    cap = Capture()
    forwarder = cap.forwarder(store, clock)
    other = CTX._replace(function="thumbs")
    store.commit([transition(), transition(ctx=other)])
    store.create_silence(
        [Matcher("function", "resize")], clock.now - 1, clock.now + 60, "a", "x"
    )
    forwarder.send([transition(), transition(ctx=other)])
    assert [a["labels"]["function"] for a in cap.batches[-1]] == ["thumbs"]
    assert forwarder.resend_open() == 1
    store.commit([transition(RESOLVED, seq=2, at=1100.0)])
    forwarder.send([transition(RESOLVED, seq=2, at=1100.0)])
    assert [a["endsAt"] for a in cap.batches[-1]] == [rfc3339(1100.0)]


def test_a_manual_resolve_is_forwarded_as_resolved(
    store: SqlStore, clock: FakeClock
) -> None:
    cap = Capture()
    store.commit([transition()])
    store.resolve(transition().fingerprint, "bob")
    update = transition(seq=2, at=1010.0)
    update.event = "updated"
    store.commit([update])
    cap.forwarder(store, clock).send([update])
    assert cap.batches[0][0]["endsAt"] == rfc3339(clock.now)


def test_a_failing_alertmanager_is_counted_not_raised(
    store: SqlStore, clock: FakeClock
) -> None:
    cap = Capture(status=500)
    forwarder = cap.forwarder(None, clock)
    assert forwarder.send([transition()]) == 0
    assert forwarder.failures == 1


@pytest.mark.alertmanager
def test_alerts_reach_a_real_alertmanager_and_resolve_there(
    alertmanager: Alertmanager, store: SqlStore, clock: FakeClock
) -> None:
    ctx = CTX._replace(function=f"fn-{uuid.uuid4().hex[:8]}")
    clock.now = _wall_clock()
    opened = transition(ctx=ctx, at=clock.now - 30)
    opened.starts_at = clock.now - 30
    forwarder = Forwarder(alertmanager.url, store, resend_s=RESEND_S, clock=clock)
    store.commit([opened])
    assert forwarder.send([opened]) == 1
    listed = httpx.get(
        f"{alertmanager.url}/api/v2/alerts",
        params={"filter": f'function="{ctx.function}"'},
    ).json()
    assert len(listed) == 1
    assert listed[0]["labels"] == alert_labels(ctx, "recursion") | {
        "severity": "critical"
    }
    assert listed[0]["status"]["state"] == "active"
    assert listed[0]["annotations"]["fingerprint"] == opened.fingerprint

    resolved = transition(RESOLVED, ctx=ctx, seq=2, at=clock.now - 1)
    resolved.starts_at = opened.starts_at
    store.commit([resolved])
    assert forwarder.send([resolved]) == 1
    note = alertmanager.webhook.wait_for(
        lambda a: (
            a["labels"].get("function") == ctx.function and a["status"] == "resolved"
        )
    )
    assert note["endsAt"].startswith(rfc3339(clock.now - 1)[:19])
    gone = httpx.get(
        f"{alertmanager.url}/api/v2/alerts",
        params={"filter": f'function="{ctx.function}"'},
    ).json()
    assert gone == []
    forwarder.close()


@pytest.mark.alertmanager
def test_resend_open_puts_every_open_alert_back(
    alertmanager: Alertmanager, store: SqlStore, clock: FakeClock
) -> None:
    clock.now = _wall_clock()
    names = [f"fn-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    made = [transition(ctx=CTX._replace(function=n), at=clock.now) for n in names]
    for t in made:
        t.starts_at = clock.now
    store.commit(made)
    forwarder = Forwarder(alertmanager.url, store, resend_s=RESEND_S, clock=clock)
    assert forwarder.resend_open() == 3
    listed = httpx.get(f"{alertmanager.url}/api/v2/alerts").json()
    assert {a["labels"]["function"] for a in listed} >= set(names)
    forwarder.close()


def _wall_clock() -> float:
    # Alertmanager judges startsAt and endsAt against its own clock.
    return time.time()
