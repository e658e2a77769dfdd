"""A dry run of enforcement over a replay: the actions it would have taken.

The enforcer runs on the replay's event time, so cooldowns, rate limits and
automatic releases fall where they would have fallen live.
"""

from __future__ import annotations

import logging

from detector.alerts import Transition
from detector.enforcement.audit import ActionRecord, MemoryActionLog
from detector.enforcement.service import Enforcer, build_enforcer
from dowguard.config import Settings
from dowguard.errors import ConfigError

logger = logging.getLogger(__name__)


class _EventClock:
    """The enforcer's clock: the event time the rehearsal has reached."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rehearsal:
    """Feeds transitions, in the order emitted, to a dry-run enforcer.

    The policy comes from ``settings``; the hook is always dry-run and the
    audit trail stays in memory, whatever the settings say, so replaying
    the past never touches a function or the stored audit trail. Between
    transitions the enforcer ticks every ``settings.enforcement_tick_s`` of
    event time.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.enforcement_tick_s <= 0:
            raise ConfigError(
                "rehearsal: enforcement_tick_s must be positive, "
                f"got {settings.enforcement_tick_s}"
            )
        self.clock = _EventClock()
        self.log = MemoryActionLog()
        dry = settings.model_copy(update={"enforcement_mode": "dry_run"})
        self.enforcer: Enforcer = build_enforcer(dry, self.log, self.clock)
        # The enforcer does not sleep in a dry run; a retry must not either.
        self.enforcer.sleep = lambda seconds: None
        self.tick_s = settings.enforcement_tick_s
        self._last_tick: float | None = None

    def observe(self, transition: Transition) -> None:
        """Act on one transition at its event time."""
        self.advance(transition.at)
        self.enforcer.on_transitions([transition])

    def advance(self, until: float) -> None:
        """Tick on event time up to ``until``."""
        if self._last_tick is None:
            self._last_tick = until
        while self._last_tick + self.tick_s <= until:
            self._last_tick += self.tick_s
            self.clock.now = self._last_tick
            self.enforcer.tick()
        self.clock.now = max(self.clock.now, until)

    def actions(self) -> list[ActionRecord]:
        """Every action recorded so far, oldest first."""
        return self.log.find()
