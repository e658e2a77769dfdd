"""The benchmark's own plumbing: both sides of each ratio see the same events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import workload
from bench.cli import (
    AGED_HOURS,
    TARGET_BYTES_PER_CONTEXT,
    TARGET_DAEMON_RATIO,
    TARGET_REPLAY_RATIO,
    _aged,
    _feed,
    _partitions,
    bench_memories,
    bench_memory,
    bench_replay,
)
from bench.idle import IdleEngine
from detector.engine import Engine
from detector.replay import Replay
from detector.sources import (
    _LOG_FIRST,
    _LOG_LATEST,
    _LOG_MINUTES,
    BILLED,
    SourcesConfig,
)
from dowguard.cli import BUNDLED_RECORDING
from ingest.formats.recording import write_recording
from ingest.parse import read_paths


def _raise(error: Exception) -> None:
    raise error


def test_replay_and_its_floor_read_the_same_events(tmp_path: Path) -> None:
    events = workload.workload(3000, 50)
    path = tmp_path / "small.dgr"
    write_recording(path, events)
    result = bench_replay(path, repeat=1)
    assert result["events"] == len(events)
    assert result["parse_events_per_s"] > 0 and result["replay_events_per_s"] > 0
    ratio = result["replay_events_per_s"] / result["parse_events_per_s"]
    assert result["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert result["parse_cpu_us_per_event"] > 0
    assert result["replay_cpu_us_per_event"] > 0
    cpu = result["parse_cpu_us_per_event"] / result["replay_cpu_us_per_event"]
    assert result["cpu_ratio"] == pytest.approx(cpu, abs=0.02)
    # The replay path without the detector, and what that leaves for it.
    _check_idle(result, "parse", "replay", TARGET_REPLAY_RATIO)


def _check_idle(
    result: dict[str, float], baseline: str, measured: str, target: float
) -> None:
    """The idle run's figures are what they say, against ``baseline``."""
    assert result["idle_events_per_s"] > 0
    idle = result["idle_events_per_s"] / result[f"{baseline}_events_per_s"]
    assert result["idle_ratio"] == pytest.approx(idle, abs=1e-3)
    idle_cpu = result["idle_cpu_us_per_event"]
    detector = result[f"{measured}_cpu_us_per_event"] - idle_cpu
    assert result["detector_cpu_us_per_event"] == pytest.approx(detector, abs=0.02)
    budget = result[f"{baseline}_cpu_us_per_event"] / target - idle_cpu
    assert result["detector_budget_cpu_us_per_event"] == pytest.approx(budget, abs=0.02)


def test_the_idle_engine_takes_every_event_and_detects_nothing() -> None:
    # The bundled recording raises alerts through the real engine; the idle
    # one replays all of it and raises none, so its run is the path alone.
    events = list(read_paths([BUNDLED_RECORDING], _raise))
    real = Replay(Engine()).run(events)
    idle = Replay(IdleEngine()).run(events)
    assert real.transitions and real.events == len(events)
    assert idle.events == len(events)
    assert idle.transitions == []


def test_memory_counts_every_context() -> None:
    result = bench_memory(500)
    assert result["contexts"] == 500
    assert result["bytes_per_context"] > 0


def test_memory_per_context_stays_within_its_target() -> None:
    # Allocations counted by tracemalloc, not time: the same on any load.
    result = bench_memory(2000)
    assert result["bytes_per_context"] <= TARGET_BYTES_PER_CONTEXT


def _memory_in_a_fresh_process(contexts: int, aged: bool) -> dict[str, float]:
    """``bench_memory`` in a process of its own, as ``dowguard bench`` runs it.

    Within the test session, what earlier tests left in process-wide tables
    (interned names, caches) can be resized during the count and charged to
    its contexts; a figure this close to its target is read on its own.
    """
    code = (
        "import json, sys; from bench.cli import bench_memory; "
        f"json.dump(bench_memory({contexts}, aged={aged}), sys.stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def test_memory_after_two_days_stays_within_its_target() -> None:
    # At 2,000 contexts what is per partition, not per context, weighs as
    # little as at the bench's 5,000 (both about 4,030 B).
    aged = _memory_in_a_fresh_process(2000, aged=True)
    assert aged["contexts"] == 2000 and aged["hours"] == AGED_HOURS
    assert aged["bytes_per_context"] <= TARGET_BYTES_PER_CONTEXT
    # Two days of state hold more than three windows do.
    fresh = _memory_in_a_fresh_process(2000, aged=False)
    assert aged["bytes_per_context"] > fresh["bytes_per_context"]


def test_aged_contexts_hold_their_state_at_its_full_size() -> None:
    engine = Engine()
    ctxs = workload.contexts(30)
    _feed(engine, _aged(ctxs, workload.T0), _partitions(ctxs))
    kept = SourcesConfig().hours_kept
    for ctx in ctxs:
        state = engine._find(ctx)
        assert state is not None and state.sources is not None
        src = state.sources
        # Both hourly lanes span all their hours, circular, in one array.
        assert len(src.values) == 2 * kept and src.computed_n == kept
        assert src.total(workload.T0, workload.T0 + 3600.0) is None  # evicted
        assert src.total(workload.T0, workload.T0 + 3600.0, BILLED) is None
        track = src.metric
        assert track is not None and track.baseline.is_warm
        assert track.nums[_LOG_LATEST] - track.nums[_LOG_FIRST] >= _LOG_MINUTES
        assert state.baseline.is_warm and state.baseline._profile is not None
        billing = src.billing
        assert billing is not None and billing.last is not None
        assert billing.queued  # the recent hour's bill still waits


def test_both_memory_figures_and_the_larger_one_are_reported() -> None:
    result = bench_memories(600, aged_contexts=300)
    fresh, aged = result["fresh"], result["aged"]
    assert fresh["contexts"] == 600 and aged["contexts"] == 300
    worst = max(fresh["bytes_per_context"], aged["bytes_per_context"])
    assert result["bytes_per_context"] == worst
    assert result["within_target"] == (worst <= TARGET_BYTES_PER_CONTEXT)
    assert aged["fresh_bytes_per_context"] < aged["bytes_per_context"]


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
    # The daemon does all the bare consumer does, and parses and detects.
    assert result["daemon_cpu_us_per_event"] > result["bare_consumer_cpu_us_per_event"]
    # The idle run took every event too (or it raises), and the figures
    # derived from it are what they say.
    _check_idle(result, "bare_consumer", "daemon", TARGET_DAEMON_RATIO)


def test_the_timed_daemon_counts_the_checkpoints_inside_its_window() -> None:
    from kafka.structs import TopicPartition

    from bench.kafka_bench import _TimedDaemon
    from detector.memory_sink import MemorySink
    from dowguard.config import Settings
    from ingest.events import encode_event_array

    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    invs = workload.invocations(30, 3)
    daemon = _TimedDaemon(settings, Engine(), MemorySink(), target=len(invs))
    tp = TopicPartition(settings.topic_invocations, 0)
    daemon._owned = {tp}
    records = [
        _Record(tp.topic, 0, i, inv.context.key(), encode_event_array(inv))
        for i, inv in enumerate(invs)
    ]
    daemon._handle_batch(tp, records[:10])
    daemon._commit(checkpoint=True)
    daemon._handle_batch(tp, records[10:20])
    daemon._commit(checkpoint=True)
    daemon._handle_batch(tp, records[20:])
    daemon._commit(checkpoint=True)  # after the count is complete: not counted
    assert daemon.done.is_set()
    assert daemon.checkpoints == 3
    assert daemon.timed_checkpoints == 2


class _Record:
    """The fields of a consumer record that the daemon reads."""

    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes, value: bytes
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value = key, value


def test_instruction_workloads_take_every_event(tmp_path: Path) -> None:
    from bench.instructions import daemon_run, measure, replay_run

    events = workload.workload(2000, 40)
    assert measure(replay_run(2000, 40, tmp_path)) == len(events)
    # Every published event is one message, and the daemon takes each.
    assert measure(daemon_run(2000, 40)) == len(events)
