"""The contract every detector of dowguard follows, shaped like a river estimator.

A detector keeps its constructor parameters under their own names and
nothing else; whatever it learns lives in underscored attributes. So
``clone()`` gives an unlearned copy with the same parameters, ``repr``
shows exactly those parameters, and a pickle round trip keeps every score.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Self


def is_missing(value: float | None) -> bool:
    """A value a detector must treat as absent: ``None`` or NaN."""
    return value is None or value != value


class Detector(ABC):
    """Learns from one observation at a time and says how unusual one is.

    ``learn_one`` updates the detector in place and returns nothing.
    ``score_one`` is higher for more anomalous input and never negative;
    each detector documents its range (deviations above an expected value
    for baselines, ``[0, 1]`` for the pooled models). A missing observation
    (``None``, NaN, or for a feature vector an absent key) never raises:
    baselines learn nothing from it and score it 0, models put the
    feature's neutral value in its place.
    """

    # Empty, so that a detector kept per context can be slotted: a
    # subclass without slots still gets its instance dict.
    __slots__ = ()

    #: Upper end of the scores; ``math.inf`` for unbounded ones.
    score_max: float = math.inf

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The constructor parameters, by name."""

    @abstractmethod
    def learn_one(self, x: Any, t: float | None = None) -> None:
        """Learn one observation (made at event time ``t`` when given)."""

    @abstractmethod
    def score_one(self, x: Any, t: float | None = None) -> float:
        """How anomalous ``x`` is (at event time ``t`` when given)."""

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Cheap parameters for the generic detector checks."""
        return {}

    def clone(self) -> Self:
        """A copy with the same parameters and nothing learned."""
        return type(self)(**self._params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"
