"""An engine that takes every event and detects nothing.

Replay or the daemon run through it cost what their path costs without
the detector (reading, parsing, partitions, commits), so the gap between
its CPU per event and a real run's is the detector's own share, and the
ratio it reaches is the most that path allows whatever the detector does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from detector.engine import Engine
from ingest.events import Event


class IdleEngine(Engine):
    """:class:`Engine` with an empty per-event step: it counts, no more."""

    def process_many(
        self,
        events: Sequence[Event],
        partitions: Sequence[int],
        on_output: Callable[[], None],
    ) -> None:
        self.events += len(events)

    def intake(self, partition: int) -> Callable[[Event], None]:
        def one(event: Event) -> None:
            self.events += 1

        return one
