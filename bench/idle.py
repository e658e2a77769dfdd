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


def idle_figures(
    target: float,
    baseline: tuple[float, float],
    measured_cpu: float,
    idle: tuple[float, float],
) -> dict[str, float]:
    """What a run on :class:`IdleEngine` tells beside a measured run.

    ``baseline`` and ``idle`` are (events per second, CPU seconds per
    event) of the target's baseline and of the idle run; ``measured_cpu``
    the measured run's CPU seconds per event. The detector's share is what
    the idle run saves; its budget, the CPU per event the target allows
    less the idle run's (negative: the path alone misses the target).
    """
    base_rate, base_cpu = baseline
    idle_rate, idle_cpu = idle
    return {
        "idle_events_per_s": round(idle_rate),
        "idle_ratio": round(idle_rate / base_rate, 3),
        "idle_cpu_us_per_event": round(idle_cpu * 1e6, 2),
        "detector_cpu_us_per_event": round((measured_cpu - idle_cpu) * 1e6, 2),
        "detector_budget_cpu_us_per_event": round(
            (base_cpu / target - idle_cpu) * 1e6, 2
        ),
    }
