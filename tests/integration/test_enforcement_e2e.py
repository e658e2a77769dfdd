"""A recursive SQS loop on the real broker, throttled in moto by ``dowguard run``.

The daemon is the command a user runs, with the AWS Lambda hook pointed at
moto's server and forwarding to a real Alertmanager. The test follows the
function in moto from outside while the loop is detected, throttled,
released after its TTL, and delivered a second time.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.security import DEV_KEY
from api.store import SqlActionLog, SqlStore
from detector.alerts import CRITICAL
from detector.enforcement.audit import RELEASE, SUCCEEDED, THROTTLE
from dowguard.config import Settings
from tests.api.conftest import Alertmanager
from tests.conftest import TopicFactory
from tests.detector.streams import T0, sqs_loop
from tests.integration.cli_daemon import (
    ROLES,
    DaemonProcess,
    caught_up,
    publish,
    topic_env,
)
from tests.moto_server import CREDENTIALS, MotoAccount

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.aws,
    pytest.mark.alertmanager,
    pytest.mark.slow,
]

PARTITIONS = 3
TTL_S = 3.0
#: How often the test looks at the function in moto.
WATCH_S = 0.05


class ConcurrencyWatch:
    """Follows a function's reserved concurrency in moto from a thread.

    ``seen`` lists each value as it changes, so the test can tell the order
    of what happened without catching any moment in particular.
    """

    def __init__(self, moto: MotoAccount, function: str) -> None:
        self.moto = moto
        self.function = function
        self.seen: list[int | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ConcurrencyWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.moto.reserved(self.function)
            if not self.seen or self.seen[-1] != value:
                self.seen.append(value)
            self._stop.wait(WATCH_S)


def daemon_env(
    topics: dict[str, str],
    group: str,
    database_url: str,
    moto: MotoAccount,
    alertmanager: Alertmanager,
) -> dict[str, str]:
    return {
        **CREDENTIALS,
        **topic_env(topics),
        "DOWGUARD_GROUP_ID": group,
        "DOWGUARD_DATABASE_URL": database_url,
        "DOWGUARD_PARTITIONS": str(PARTITIONS),
        "DOWGUARD_COMMIT_INTERVAL_S": "0.3",
        "DOWGUARD_ENFORCEMENT_MODE": "aws_lambda",
        "DOWGUARD_ENFORCEMENT_AWS_ENDPOINT_URL": moto.url,
        "DOWGUARD_ENFORCEMENT_TTL_S": str(TTL_S),
        "DOWGUARD_ENFORCEMENT_TICK_S": "0.2",
        "DOWGUARD_ENFORCEMENT_RELEASE_LOOPS": "true",
        "DOWGUARD_ALERTMANAGER_URL": alertmanager.url,
    }


@pytest.mark.timeout(420)
def test_a_recursive_loop_is_throttled_in_moto_released_after_ttl_and_acted_on_once(
    kafka_bootstrap: str,
    unique_topics: TopicFactory,
    moto: MotoAccount,
    alertmanager: Alertmanager,
    tmp_path: Path,
) -> None:
    function = f"order-loop-{uuid.uuid4().hex[:8]}"
    ctx = moto.function(function)
    mapping = moto.queue_mapping(function, f"{function}-queue", enabled=True)
    assert moto.reserved(function) is None
    before = moto.mapping_states(function)
    assert before == {mapping: "Enabled"}

    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    spans = sqs_loop(ctx, hops=8, start=T0, queue=f"{function}-queue")
    publish(kafka_bootstrap, topics, spans)

    database_url = f"sqlite:///{tmp_path}/dowguard.db"
    store = SqlStore(database_url)
    store.ensure_schema()
    actions = SqlActionLog(store)
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    env = daemon_env(topics, group, database_url, moto, alertmanager)
    watch = ConcurrencyWatch(moto, function).start()
    daemon = DaemonProcess(kafka_bootstrap, env, tmp_path / "daemon.log")
    try:
        daemon.run_until(
            lambda: any(
                r.verb == RELEASE and r.state == SUCCEEDED for r in actions.find()
            ),
            "the throttle and its release after the TTL",
            detail=lambda: f"actions={actions.find()}\n{daemon.tail()}",
        )
    finally:
        watch.stop()

    # The critical alert is stored, and its first critical transition has
    # the wall-clock time it was stored at.
    alert = next(v for v in store.firing_alerts() if v.row.kind == "recursive_trigger")
    assert (alert.row.function, alert.row.severity) == (function, CRITICAL)
    detail = store.get_alert(alert.row.fingerprint)
    stored_at = min(
        t.stored_at for t in detail.transitions if t.payload["severity"] == CRITICAL
    )

    # The audit trail, as the API shows it: one throttle and one release,
    # both carrying the alert's fingerprint.
    app = create_app(Settings(database_url=database_url, dev_mode=True), store=store)
    with TestClient(app) as client:
        listed = client.get(
            "/api/v1/actions",
            params={"fingerprint": alert.row.fingerprint},
            headers={"Authorization": f"Bearer {DEV_KEY}"},
        )
    assert listed.status_code == 200, listed.text
    trail = listed.json()["data"]
    assert sorted((a["verb"], a["state"]) for a in trail) == [
        (RELEASE, SUCCEEDED),
        (THROTTLE, SUCCEEDED),
    ]
    throttle = next(r for r in actions.find() if r.verb == THROTTLE)
    release = next(r for r in actions.find() if r.verb == RELEASE)
    assert throttle.fingerprint == release.fingerprint == alert.row.fingerprint
    assert throttle.hook == "aws_lambda"
    assert throttle.previous["reserved_concurrency"] is None
    assert throttle.previous["mappings_disabled"] == [mapping]
    assert throttle.outcome["after"]["reserved_concurrency"] == 0

    # In moto: reserved concurrency went to 0 and back to none at all; the
    # loop's queue mapping was turned off and is polling again.
    assert watch.seen == [None, 0, None]
    assert moto.reserved(function) is None
    assert moto.mapping_states(function) == before

    # Stored, then acted on; the release waited for the TTL.
    gap = throttle.updated_at - stored_at
    assert stored_at <= throttle.created_at <= throttle.updated_at
    assert release.created_at >= throttle.updated_at + TTL_S
    print(f"\nenforcement gap: alert stored -> throttle completed {gap:.3f} s")

    # Alertmanager got the alert from the daemon, fingerprint and all.
    forwarded = httpx.get(
        f"{alertmanager.url}/api/v2/alerts",
        params={"filter": f'function="{function}"'},
    ).json()
    assert [a["annotations"]["fingerprint"] for a in forwarded] == [
        alert.row.fingerprint
    ]

    # The same loop delivered again: a daemon in a new group reads the
    # topics from the start, and its transitions reach the enforcer again.
    replay_group = f"{group}-again"
    env["DOWGUARD_GROUP_ID"] = replay_group
    again = DaemonProcess(kafka_bootstrap, env, tmp_path / "daemon-again.log")
    # Evidence of the trace stage goes round its own topic; SIGTERM lets the
    # daemon finish what it handed to the enforcer.
    again.run_until(
        lambda: caught_up(
            kafka_bootstrap,
            replay_group,
            [topics["traces"], topics["evidence"]],
            PARTITIONS,
        ),
        "the second daemon reading the loop again",
    )
    assert "recursive_trigger" in again.log.read_text()
    assert sorted((r.verb, r.state) for r in actions.find()) == [
        (RELEASE, SUCCEEDED),
        (THROTTLE, SUCCEEDED),
    ]
    assert moto.reserved(function) is None
    store.close()
