"""One shared object for equal values that every context would otherwise copy.

Per-context state holds many values that are the same across contexts (the
end of the current hour, a month's bounds, a ring's first bucket, a
baseline's settings). Handing out one object for each keeps 100,000
contexts from holding 100,000 equal copies.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Shared(Generic[T]):
    """The values handed out lately, at most ``kept`` of them.

    When full it starts again empty: values in use stay valid (they are
    only no longer shared with values handed out afterwards).
    """

    __slots__ = ("_kept", "_values")

    def __init__(self, kept: int) -> None:
        self._kept = kept
        self._values: dict[Hashable, T] = {}

    def __call__(self, value: T, key: Hashable | None = None) -> T:
        """The shared object equal to ``value`` (found by ``key`` if given)."""
        k = value if key is None else key
        shared = self._values.get(k)
        if shared is None:
            if len(self._values) >= self._kept:
                self._values.clear()
            shared = self._values[k] = value
        return shared
