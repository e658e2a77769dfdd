"""The detector: one object that every path (daemon, replay, tests) feeds.

Events are given with the partition number their stream puts them on; all
state is kept per partition number so that it can be checkpointed, moved
to another daemon in a rebalance, and restored there.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass

from detector.alerts import Transition
from detector.evidence import Evidence
from ingest.events import Event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of the detector; see the README for what each one does."""

    window_s: float = 10.0
    lateness_s: float = 5.0
    partitions: int = 3
    recursion_hops: int = 3


class Engine:
    """Feeds events into per-partition state and collects what it emits."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._transitions: list[Transition] = []
        self._evidence: list[Evidence] = []
        self._events: dict[int, int] = {}

    def process(self, event: Event, partition: int) -> None:
        """Take one event from the stream it travels on, at that partition."""
        self._events[partition] = self._events.get(partition, 0) + 1

    def process_evidence(self, evidence: Evidence, partition: int) -> None:
        """Take evidence from the trace stage (keyed by its context)."""

    def take_transitions(self) -> list[Transition]:
        out, self._transitions = self._transitions, []
        return out

    def take_evidence(self) -> list[Evidence]:
        out, self._evidence = self._evidence, []
        return out

    def flush(self) -> None:
        """Close every open window, as at the end of a finite replay."""

    def snapshot(self, partition: int) -> bytes:
        return pickle.dumps(self._events.get(partition, 0))

    def restore(self, partition: int, blob: bytes) -> None:
        self._events[partition] = pickle.loads(blob)

    def drop(self, partition: int) -> None:
        """Forget a partition's state (it was revoked in a rebalance)."""
        self._events.pop(partition, None)
