"""``dowguard run --kafka --api``: the REST API served inside the daemon.

Its /readyz answers for the daemon's consumer, and its alert list shows what
the daemon stores, read through the same store while the daemon runs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from api.security import create_key
from api.store import SqlStore
from ingest.events import Context
from tests.conftest import TopicFactory
from tests.detector.streams import T0, sqs_loop
from tests.integration.cli_daemon import (
    ROLES,
    DaemonProcess,
    publish,
    topic_env,
    wait_for,
)
from tests.moto_server import CREDENTIALS
from tests.processes import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3


def _get(url: str, key: str | None = None) -> httpx.Response | None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        return httpx.get(url, headers=headers, timeout=5.0)
    except httpx.HTTPError:
        return None


@pytest.mark.timeout(300)
def test_the_daemon_serves_its_alerts_and_readiness(
    kafka_bootstrap: str, unique_topics: TopicFactory, tmp_path: Path
) -> None:
    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    ctx = ("aws", "111122223333", "us-east-1", f"loop-{uuid.uuid4().hex[:8]}")
    spans = sqs_loop(Context(*ctx), hops=8, start=T0, queue="q")
    publish(kafka_bootstrap, topics, spans)

    database_url = f"sqlite:///{tmp_path}/dowguard.db"
    store = SqlStore(database_url)
    store.ensure_schema()
    key = create_key(store, "viewer", "daemon-api-test")
    store.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **CREDENTIALS,
        **topic_env(topics),
        "DOWGUARD_GROUP_ID": f"api-{uuid.uuid4().hex[:8]}",
        "DOWGUARD_DATABASE_URL": database_url,
        "DOWGUARD_PARTITIONS": str(PARTITIONS),
        "DOWGUARD_COMMIT_INTERVAL_S": "0.3",
        "DOWGUARD_API_PORT": str(port),
    }
    daemon = DaemonProcess(kafka_bootstrap, env, tmp_path / "daemon.log", ["--api"])
    seen: dict[str, object] = {}

    def ready() -> bool:
        answer = _get(f"{base}/readyz")
        if answer is None or answer.status_code != 200:
            return False
        seen["ready"] = answer.json()
        return True

    def loop_listed() -> bool:
        answer = _get(f"{base}/api/v1/alerts?kind=recursive_trigger", key)
        if answer is None or answer.status_code != 200:
            return False
        items = answer.json()["data"]
        seen["alerts"] = items
        return any(item["labels"]["function"] == ctx[3] for item in items)

    try:
        wait_for(ready, "/readyz of the daemon's API", 120.0, daemon.tail)
        assert seen["ready"] == {
            "status": "ready",
            "database": True,
            "consumer_running": True,
        }
        # Routes other than the health checks still need a key.
        refused = _get(f"{base}/api/v1/alerts")
        assert refused is not None and refused.status_code == 401
        wait_for(loop_listed, "the loop's alert through the API", 120.0, daemon.tail)
        assert daemon.stop() == 0, daemon.tail()
    finally:
        daemon.kill()
    # The server went with the daemon.
    assert _get(f"{base}/healthz") is None
