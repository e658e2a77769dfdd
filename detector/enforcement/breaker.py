"""A circuit breaker per hook, so that a failing platform is not hammered."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one hook and decides whether to call.

    After ``failure_threshold`` transient failures in a row it opens and
    refuses calls for ``reset_after_s``; then it lets one trial call through
    (half open) and closes again if that call succeeds.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_after_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(
                f"breaker {name}: failure_threshold must be >= 1,"
                f" got {failure_threshold}"
            )
        if reset_after_s <= 0:
            raise ValueError(
                f"breaker {name}: reset_after_s must be > 0, got {reset_after_s}"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_out = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def allow(self) -> bool:
        """Whether a call may go out now; a half-open breaker allows one."""
        with self._lock:
            state = self._state()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial_out:
                self._trial_out = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                logger.info("breaker closed hook=%s", self.name)
            self._failures = 0
            self._opened_at = None
            self._trial_out = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            reopen = self._trial_out
            if reopen or (
                self._opened_at is None and self._failures >= self.failure_threshold
            ):
                self._opened_at = self.clock()
                self._trial_out = False
                logger.warning(
                    "breaker open hook=%s failures=%d for_s=%s",
                    self.name,
                    self._failures,
                    self.reset_after_s,
                )

    def _state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self.clock() - self._opened_at >= self.reset_after_s:
            return HALF_OPEN
        return OPEN
