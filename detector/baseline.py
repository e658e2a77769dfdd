"""A robust, slow-learning baseline of one context's cost rate.

Shaped like a river estimator: the constructor keeps the hyperparameters
under their own names, learned state lives in underscored attributes,
``learn_one`` updates in place and ``score_one`` says how anomalous a value
is (higher is more anomalous, 0 for anything at or below the baseline).
"""

from __future__ import annotations

import math

#: Scale from mean absolute deviation to standard deviation for a normal law.
MAD_TO_STD = 1.2533


class RobustBaseline:
    """Exponentially weighted mean and deviation with clipped updates.

    Parameters
    ----------
    half_life
        Number of observations after which an observation weighs half.
    warmup
        Observations needed before :meth:`is_warm` is true; until then the
        mean is a plain running mean, so a new context learns quickly.
    clip
        Updates are clipped to ``mean + clip * deviation``, so one outlier
        (or an attack that was not flagged) moves the baseline only a little.

    Examples
    --------
    >>> b = RobustBaseline(half_life=10, warmup=5)
    >>> for x in [1.0, 1.2, 0.8, 1.1, 0.9, 1.0]:
    ...     b.learn_one(x)
    >>> round(b.mean, 2), b.is_warm
    (1.0, True)
    >>> b.score_one(1.0) < 1 < b.score_one(5.0)
    True
    """

    def __init__(self, half_life: float = 180.0, warmup: int = 30, clip: float = 4.0):
        self.half_life = half_life
        self.warmup = warmup
        self.clip = clip
        self._alpha = 1.0 - 0.5 ** (1.0 / half_life)
        self._n = 0
        self._mean = 0.0
        self._mad = 0.0

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def deviation(self) -> float:
        """An estimate of the standard deviation of the observations."""
        return self._mad * MAD_TO_STD

    @property
    def n(self) -> int:
        return self._n

    @property
    def is_warm(self) -> bool:
        return self._n >= self.warmup

    def learn_one(self, x: float) -> None:
        n = self._n
        mean = self._mean
        if n >= 2:
            dev = self._mad * MAD_TO_STD
            ceiling = mean + self.clip * (dev if dev > 0.1 * mean else 0.1 * mean)
            if x > ceiling:
                x = ceiling
        n += 1
        self._n = n
        alpha = self._alpha if self._alpha * n > 1.0 else 1.0 / n
        self._mad += alpha * ((x - mean if x >= mean else mean - x) - self._mad)
        self._mean = mean + alpha * (x - mean)

    def learn_many_zeros(self, count: int) -> None:
        """Learn ``count`` observations of 0 at once (idle windows)."""
        # Step by step while the running mean still sets the pace, then in
        # closed form: with a fixed alpha and non-negative observations, k
        # zeros scale the mean by r**k and move the deviation to
        # r**k * mad + k * alpha * r**(k-1) * mean, where r = 1 - alpha.
        while count > 0 and self._alpha * (self._n + 1) <= 1.0:
            self.learn_one(0.0)
            count -= 1
        if count <= 0:
            return
        if self._mean < 0:
            for _ in range(min(count, 10_000)):
                self.learn_one(0.0)
            return
        alpha = self._alpha
        r = 1.0 - alpha
        rk1 = r ** (count - 1)
        self._mad = rk1 * r * self._mad + count * alpha * rk1 * self._mean
        self._mean *= rk1 * r
        self._n += count

    def score_one(self, x: float, floor: float = 0.0) -> float:
        """Deviations above the mean; ``floor`` bounds the deviation below."""
        spread = max(self.deviation, floor)
        if spread <= 0.0:
            return math.inf if x > self._mean else 0.0
        return max(0.0, (x - self._mean) / spread)

    def clone(self) -> RobustBaseline:
        return RobustBaseline(self.half_life, self.warmup, self.clip)

    def __repr__(self) -> str:
        return (
            f"RobustBaseline(half_life={self.half_life!r}, warmup={self.warmup!r}, "
            f"clip={self.clip!r})"
        )
