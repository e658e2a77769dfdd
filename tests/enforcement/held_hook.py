"""A dry enforcement hook whose throttle blocks until the test lets it go, for
the tests of what keeps running while a platform call hangs."""

from __future__ import annotations

import threading
from typing import Any

from ingest.events import Context


class HeldHook:
    """Throttles only once the test sets ``go``; ``calls`` lists what it did.

    ``entered`` is set as a throttle starts, so a test can wait until the
    hook is being held. A throttle not let go within ``wait_s`` fails.
    """

    name = "held"

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.entered = threading.Event()
        self.go = threading.Event()
        self.calls: list[tuple[str, str]] = []

    def throttle(
        self, context: Context, reason: str, *, loop: bool = False
    ) -> dict[str, Any]:
        self.entered.set()
        assert self.go.wait(self.wait_s), "the test never let the hook go"
        self.calls.append(("throttle", context.function))
        return {"reserved": None}

    def release(self, context: Context, previous: dict[str, Any]) -> None:
        self.calls.append(("release", context.function))

    def read(self, context: Context) -> dict[str, Any]:
        return {}
