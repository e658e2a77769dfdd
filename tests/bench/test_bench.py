"""The benchmark's own plumbing: both sides of each ratio see the same events."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import workload
from bench.cli import TARGET_BYTES_PER_CONTEXT, bench_memory, bench_replay
from ingest.formats.recording import write_recording


def test_replay_and_its_floor_read_the_same_events(tmp_path: Path) -> None:
    events = workload.workload(3000, 50)
    path = tmp_path / "small.dgr"
    write_recording(path, events)
    result = bench_replay(path, repeat=1)
    assert result["events"] == len(events)
    assert result["parse_events_per_s"] > 0 and result["replay_events_per_s"] > 0
    ratio = result["replay_events_per_s"] / result["parse_events_per_s"]
    assert result["ratio"] == pytest.approx(ratio, abs=1e-3)


def test_memory_counts_every_context() -> None:
    result = bench_memory(500)
    assert result["contexts"] == 500
    assert result["bytes_per_context"] > 0


def test_memory_per_context_stays_within_its_target() -> None:
    # Allocations counted by tracemalloc, not time: the same on any load.
    result = bench_memory(2000)
    assert result["bytes_per_context"] <= TARGET_BYTES_PER_CONTEXT


@pytest.mark.kafka
def test_daemon_and_bare_consumer_take_every_published_event(
    kafka_bootstrap: str,
) -> None:
    from bench.kafka_bench import bench_daemon

    events = workload.workload(2000, 20)
    result = bench_daemon(kafka_bootstrap, list(events), repeat=1)
    assert result["events"] == len(events)
    assert result["bare_consumer_events_per_s"] > 0
    assert result["daemon_events_per_s"] > 0
