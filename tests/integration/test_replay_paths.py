"""The bundled recording gives the same alerts from files as through Kafka.

One path reads the files with ``dowguard replay``; the other publishes them
with ``dowguard replay --to-kafka`` and lets ``dowguard run --kafka`` consume
them, with the trace stage's evidence going round its own topic. Both store
into a database of their own, and the alerts there must agree.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from api.store import AlertQuery, SqlStore, context_of
from dowguard.cli import BUNDLED_RECORDING
from tests.conftest import TopicFactory
from tests.integration.cli_daemon import (
    ROLES,
    DaemonProcess,
    caught_up,
    dowguard,
    topic_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3

Alert = tuple[str, str, str, float, tuple[str, ...], str, float | None]


def final_alerts(database_url: str) -> list[Alert]:
    """Fingerprint, kind, severity, start, context, status and end of each alert."""
    store = SqlStore(database_url)
    try:
        page = store.list_alerts(AlertQuery(limit=1000))
    finally:
        store.close()
    assert page.count == len(page.data)
    return sorted(
        (
            v.row.fingerprint,
            v.row.kind,
            v.row.severity,
            v.row.starts_at,
            tuple(context_of(v.row)),
            v.row.status,
            v.row.ends_at,
        )
        for v in page.data
    )


@pytest.mark.timeout(600)
def test_the_bundled_recording_alerts_alike_from_files_and_through_kafka(
    kafka_bootstrap: str, unique_topics: TopicFactory, tmp_path: Path
) -> None:
    recording = str(BUNDLED_RECORDING)
    files_db = f"sqlite:///{tmp_path}/files.db"
    kafka_db = f"sqlite:///{tmp_path}/kafka.db"
    common = {"DOWGUARD_PARTITIONS": str(PARTITIONS)}

    files_env = {**common, "DOWGUARD_DATABASE_URL": files_db}
    replayed = dowguard("replay", recording, env=files_env)
    assert replayed.returncode == 0, replayed.stderr
    from_files = final_alerts(files_db)
    # The recording holds a cost spike and a loop; both must be found.
    assert {a[1] for a in from_files} == {"cost_spike", "recursive_trigger"}

    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    env = {**common, **topic_env(topics)}
    published = dowguard("replay", recording, "--to-kafka", kafka_bootstrap, env=env)
    assert published.returncode == 0, published.stderr
    assert "0 records skipped" in published.stderr

    group = f"paths-{uuid.uuid4().hex[:8]}"
    env |= {
        "DOWGUARD_DATABASE_URL": kafka_db,
        "DOWGUARD_GROUP_ID": group,
        "DOWGUARD_COMMIT_INTERVAL_S": "0.5",
    }
    inputs = [topics[r] for r in ("invocations", "billing", "traces", "evidence")]
    daemon = DaemonProcess(kafka_bootstrap, env, tmp_path / "daemon.log")
    daemon.run_until(
        lambda: caught_up(kafka_bootstrap, group, inputs, PARTITIONS),
        "the daemon consuming the whole recording",
        timeout_s=400,
    )

    assert final_alerts(kafka_db) == from_files
