"""The REST API over HTTP: alerts, silences, functions, actions, probes, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.app import set_consumer_running
from api.security import VIEWER
from api.store import SqlActionLog
from detector.alerts import OPENED, FunctionStatus, Transition, fingerprint
from detector.enforcement.audit import (
    PENDING_APPROVAL,
    SUCCEEDED,
    THROTTLE,
    ActionRecord,
)
from ingest.events import Context
from tests.api.conftest import Api

CTX = Context("aws", "111122223333", "us-east-1", "resize")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def opened(
    ctx: Context = CTX, kind: str = "recursion", at: float = 1000.0, **kw: Any
) -> Transition:
    return Transition(
        event=OPENED,
        fingerprint=fingerprint(ctx, kind),
        kind=kind,
        severity=kw.get("severity", "critical"),
        context=ctx,
        starts_at=at,
        at=at,
        seq=1,
        cost_usd=kw.get("cost", 2.5),
        summary="loop through queue q1",
        evidence={"hops": 4, "via": "q1"},
    )


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["message"]


def test_read_alerts_filters_and_pages(api: Api) -> None:
    made = [
        opened(CTX._replace(function=f"fn{i}"), at=1000.0 + i, cost=float(i % 3))
        for i in range(12)
    ]
    api.store.commit(made)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5, "sort": "cost_usd", "order": "asc"}
    while True:
        r = api.client.get("/api/v1/alerts", params=params, headers=api.auth(VIEWER))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == 12
        seen += [a["fingerprint"] for a in body["data"]]
        costs = [a["cost_usd"] for a in body["data"]]
        assert costs == sorted(costs)
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert sorted(seen) == sorted(t.fingerprint for t in made)
    r = api.client.get(
        "/api/v1/alerts",
        params={"since": iso(1010.0), "function": "fn11"},
        headers=api.auth(VIEWER),
    )
    assert [a["context"]["function"] for a in r.json()["data"]] == ["fn11"]


def test_a_foreign_cursor_is_a_bad_request(api: Api) -> None:
    api.store.commit([opened(CTX._replace(function=f"f{i}")) for i in range(3)])
    r = api.client.get("/api/v1/alerts", params={"limit": 1}, headers=api.auth())
    cursor = r.json()["next_cursor"]
    r = api.client.get(
        "/api/v1/alerts",
        params={"cursor": cursor, "sort": "cost_usd"},
        headers=api.auth(),
    )
    assert_error(r, 400, "bad_request")


def test_alert_detail_ack_resolve_and_comments(api: Api) -> None:
    t = opened()
    api.store.commit([t])
    url = f"/api/v1/alerts/{t.fingerprint}"
    r = api.client.post(f"{url}/ack", json={"comment": "on it"}, headers=api.auth())
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acked_by"]) == (
        "acknowledged",
        "operator-test",
    )
    r = api.client.post(
        f"{url}/comments", json={"comment": "queue q1 purged"}, headers=api.auth()
    )
    assert r.status_code == 201
    r = api.client.post(f"{url}/resolve", headers=api.auth())
    assert r.json()["state"] == "resolved"
    detail = api.client.get(url, headers=api.auth(VIEWER)).json()
    assert detail["evidence"] == {"hops": 4, "via": "q1"}
    assert [x["event"] for x in detail["transitions"]] == ["opened"]
    assert [(c["action"], c["body"]) for c in detail["comments"]] == [
        ("ack", "on it"),
        ("comment", "queue q1 purged"),
    ]
    assert detail["ends_at"] is not None
    assert_error(api.client.post(f"{url}/ack", headers=api.auth()), 409, "conflict")
    r = api.client.get("/api/v1/alerts/0123456789abcdef", headers=api.auth())
    assert_error(r, 404, "not_found")


def test_silences_mute_matching_alerts_until_expired(api: Api) -> None:
    a, b = opened(), opened(CTX._replace(function="thumbs"))
    api.store.commit([a, b])
    body = {
        "matchers": [{"name": "function", "value": "res.*", "isRegex": True}],
        "ends_at": iso(api.clock.now + 3600),
        "created_by": "alice",
        "comment": "deploy window",
    }
    r = api.client.post("/api/v1/silences", json=body, headers=api.auth())
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["state"] == "active"
    r = api.client.get(
        "/api/v1/alerts", params={"state": "silenced"}, headers=api.auth()
    )
    assert [x["fingerprint"] for x in r.json()["data"]] == [a.fingerprint]
    assert r.json()["data"][0]["silenced_by"] == [silence["id"]]
    r = api.client.get(
        "/api/v1/silences", params={"state": "active"}, headers=api.auth()
    )
    assert [s["id"] for s in r.json()["data"]] == [silence["id"]]
    r = api.client.delete(f"/api/v1/silences/{silence['id']}", headers=api.auth())
    assert r.json()["state"] == "expired"
    r = api.client.get("/api/v1/alerts", params={"state": "open"}, headers=api.auth())
    assert r.json()["count"] == 2


@pytest.mark.parametrize(
    "change",
    [
        {"matchers": [{"name": "function", "value": "(", "isRegex": True}]},
        {"matchers": [{"name": "function", "value": ".*", "isRegex": True}]},
        {"matchers": []},
        {"comment": ""},
        {"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"},
        {"matchers": [{"name": "bad-name", "value": "x"}]},
    ],
)
def test_bad_silences_are_refused(api: Api, change: dict[str, Any]) -> None:
    body = {
        "matchers": [{"name": "function", "value": "resize"}],
        "ends_at": iso(api.clock.now + 60),
        "created_by": "alice",
        "comment": "x",
    } | change
    r = api.client.post("/api/v1/silences", json=body, headers=api.auth())
    assert_error(r, 422, "validation_error")


def test_manual_throttle_waits_for_approval_without_an_enforcer(api: Api) -> None:
    api.store.update_functions([FunctionStatus(CTX, 1.0, 9.0, 1.0, 30.0)])
    api.store.commit([opened()])
    key = "/".join(CTX)
    r = api.client.get("/api/v1/functions", headers=api.auth(VIEWER))
    row = r.json()["data"][0]
    assert (row["context_key"], row["open_alerts"], row["enforcement"]) == (
        key,
        1,
        None,
    )
    r = api.client.post(
        f"/api/v1/functions/{key}/throttle", json={"reason": "bill"}, headers=api.auth()
    )
    assert r.status_code == 202, r.text
    action = r.json()
    assert (action["verb"], action["state"]) == (THROTTLE, PENDING_APPROVAL)
    assert "operator-test" in action["reason"]
    listed = api.client.get(
        "/api/v1/actions", params={"state": PENDING_APPROVAL}, headers=api.auth()
    ).json()
    assert [x["id"] for x in listed["data"]] == [action["id"]]
    r = api.client.post(f"/api/v1/actions/{action['id']}/approve", headers=api.auth())
    assert r.json()["state"] == "approved"
    again = api.client.post(
        f"/api/v1/actions/{action['id']}/reject", headers=api.auth()
    )
    assert_error(again, 409, "conflict")
    fn = api.client.get(f"/api/v1/functions/{key}", headers=api.auth()).json()
    assert fn["enforcement"]["state"] == "approved"
    r = api.client.post("/api/v1/functions/aws/x/y/z/q/throttle", headers=api.auth())
    assert_error(r, 404, "not_found")
    r = api.client.post("/api/v1/actions/nosuchaction/approve", headers=api.auth())
    assert_error(r, 404, "not_found")


class FakeEnforcer:
    """Answers at once, as an enforcer in dry-run mode would."""

    def __init__(self, log: SqlActionLog) -> None:
        self.log = log
        self.calls: list[tuple[str, Context]] = []

    def manual_throttle(self, context: Context, reason: str) -> ActionRecord:
        self.calls.append(("throttle", context))
        rec = ActionRecord(
            "a" * 32,
            "k1",
            "",
            context,
            THROTTLE,
            "dry_run",
            SUCCEEDED,
            reason,
            1.0,
            2.0,
        )
        self.log.record(rec)
        return rec

    def manual_release(self, context: Context, reason: str = "") -> ActionRecord:
        raise NotImplementedError

    def approve(self, action_id: str, by: str = "") -> ActionRecord:
        raise NotImplementedError

    def reject(self, action_id: str, by: str = "") -> ActionRecord:
        raise NotImplementedError


def test_an_injected_enforcer_carries_out_manual_throttles(api: Api) -> None:
    api.store.update_functions([FunctionStatus(CTX, 1.0, 9.0, 1.0, 30.0)])
    fake = FakeEnforcer(SqlActionLog(api.store))
    api.client.app.state.enforcement = fake  # type: ignore[attr-defined]
    r = api.client.post(
        f"/api/v1/functions/{'/'.join(CTX)}/throttle", headers=api.auth()
    )
    assert r.status_code == 202
    assert r.json()["state"] == SUCCEEDED
    assert fake.calls == [("throttle", CTX)]


def test_probes_need_no_key_and_readyz_follows_the_consumer(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    assert api.client.get("/readyz").json()["database"] is True
    set_consumer_running(api.client.app, False)  # type: ignore[arg-type]
    assert_error(api.client.get("/readyz"), 503, "not_ready")
    set_consumer_running(api.client.app, True)  # type: ignore[arg-type]
    assert api.client.get("/readyz").json()["consumer_running"] is True
    # A daemon serving the API passes a callable, asked at every request.
    state = {"running": False}
    set_consumer_running(api.client.app, lambda: state["running"])  # type: ignore[arg-type]
    assert_error(api.client.get("/readyz"), 503, "not_ready")
    state["running"] = True
    assert api.client.get("/readyz").json()["consumer_running"] is True


def test_metrics_are_prometheus_text(api: Api) -> None:
    r = api.client.get("/metrics", headers=api.auth(VIEWER))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "dowguard_" in r.text
    assert_error(api.client.get("/metrics"), 401, "unauthorized")


def test_every_failure_has_the_error_shape(api: Api) -> None:
    assert_error(api.client.get("/nowhere", headers=api.auth()), 404, "not_found")
    assert_error(
        api.client.put("/api/v1/alerts", headers=api.auth()), 405, "method_not_allowed"
    )
    r = api.client.get("/api/v1/alerts", params={"limit": 501}, headers=api.auth())
    assert_error(r, 422, "validation_error")
    r = api.client.post(
        "/api/v1/silences",
        content=b"{not json",
        headers=api.auth() | {"content-type": "application/json"},
    )
    assert_error(r, 422, "validation_error")
