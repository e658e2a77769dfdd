"""The collector policy of a stream: set inside, restored after, cycles freed."""

from __future__ import annotations

import gc
import weakref

import pytest

from detector.engine import Engine
from detector.gcpolicy import streaming_gc
from detector.replay import Replay
from tests.detector.streams import T0, steady


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_inside_young_objects_are_collected_less_often_and_the_heap_is_frozen():
    before = gc.get_threshold()
    with streaming_gc(threshold=12_345):
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_nested_block_leaves_the_policy_to_the_outermost():
    before = gc.get_threshold()
    with streaming_gc(threshold=20_000):
        with streaming_gc(threshold=30_000):
            assert gc.get_threshold()[0] == 20_000
        assert gc.get_threshold()[0] == 20_000
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before


def test_the_policy_is_restored_when_the_block_raises():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), streaming_gc():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_cycle_made_inside_is_still_freed_once_collected():
    with streaming_gc():
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        del a, b
    gc.collect()
    assert ref() is None


def test_a_replay_runs_under_the_policy_and_restores_it():
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    class Watching(Engine):
        def flush(self) -> None:
            seen.append(gc.get_threshold())
            super().flush()

    events = list(steady(1.0, T0, 60.0))
    result = Replay(Watching()).run(events)
    assert result.events == len(events)
    assert seen and seen[0][0] > before[0]
    assert gc.get_threshold() == before
