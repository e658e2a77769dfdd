"""The default hook: decides and records like the others, touches nothing."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ingest.events import Context

logger = logging.getLogger(__name__)


class DryRunHook:
    """Pretends to throttle; remembers what it pretended so reads agree."""

    name = "dry_run"

    def __init__(self) -> None:
        self._throttled: dict[Context, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def throttle(
        self, context: Context, reason: str, *, loop: bool = False
    ) -> dict[str, Any]:
        with self._lock:
            held = self._throttled.setdefault(
                context, {"dry_run": True, "throttled": False}
            )
        logger.info(
            "dry run throttle function=%s account=%s loop=%s reason=%s",
            context.function,
            context.account,
            loop,
            reason,
        )
        return dict(held)

    def release(self, context: Context, previous: dict[str, Any]) -> None:
        with self._lock:
            self._throttled.pop(context, None)
        logger.info(
            "dry run release function=%s account=%s",
            context.function,
            context.account,
        )

    def read(self, context: Context) -> dict[str, Any]:
        with self._lock:
            return {"dry_run": True, "throttled": context in self._throttled}
