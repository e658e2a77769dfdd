"""The interface every enforcement hook implements, and the errors hooks raise."""

from __future__ import annotations

from typing import Any, Protocol

from dowguard.errors import EnforcementError
from ingest.events import Context


class HookError(EnforcementError):
    """A hook call that failed.

    ``transient`` says whether trying again later may succeed (throttling,
    a 5xx, a timeout, a refused connection) or not (an unknown function, a
    refused parameter). ``previous`` is what a throttle had already captured
    before it failed, so that a release can undo a partial throttle.
    ``detail`` is what the platform answered, for the audit trail.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        previous: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.previous = previous or {}
        self.detail = detail or {}


class UnknownAction(EnforcementError):
    """An action id that the action log does not hold."""


class ActionConflict(EnforcementError):
    """An action asked to do something its state does not allow."""


class Hook(Protocol):
    """Throttles and releases one function context on its platform.

    ``throttle`` returns what it found before acting, in a JSON-ready dict;
    ``release`` gets that dict back and restores exactly that. Throttling a
    context the same hook has already throttled (and not released) applies
    the throttle again and returns the original previous state. Both raise
    :class:`HookError` on failure.
    """

    name: str

    def throttle(
        self, context: Context, reason: str, *, loop: bool = False
    ) -> dict[str, Any]:
        """Stop or cap the context; ``loop`` asks to also cut its triggers."""

    def release(self, context: Context, previous: dict[str, Any]) -> None:
        """Put back what :meth:`throttle` found."""

    def read(self, context: Context) -> dict[str, Any]:
        """The current enforcement-relevant state of the context."""
