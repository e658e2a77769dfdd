"""The pooled online model: one river anomaly detector for every context.

It learns from the window features of all warm contexts of a partition
(each normalised by its context's own baseline) and scores a window in
``[0, 1]``, higher for a window unlike the windows it has learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from river import anomaly

from models.base import Detector
from models.features import FEATURE_NAMES, unit_features


class PooledModel(Detector):
    """River's Half-Space Trees on the unit-scaled features of windows.

    Half-Space Trees (Tan, Ting and Liu, 2011) split the unit cube at
    random and score a point by how little mass the reference window put
    where it falls. Features are mapped into ``[0, 1]`` first (see
    :meth:`models.features.Feature.unit`); a missing feature is put at its
    neutral point, as if it were unremarkable, because the trees would
    otherwise read an absent value as an extreme one. The trees split only
    on the features the first window learned had.

    Scores are in ``[0, 1]``; until ``window_size`` windows have been
    learned the model scores 0 (see :attr:`is_warm`).

    Parameters
    ----------
    n_trees, height, window_size, seed
        Those of :class:`river.anomaly.HalfSpaceTrees`.

    Examples
    --------
    >>> model = PooledModel(n_trees=5, height=5, window_size=50, seed=1)
    >>> usual = {"cost_rate_ratio": 0.0, "invocations_ratio": 0.0}
    >>> for i in range(100):
    ...     model.learn_one({**usual, "cost_rate_z": (i % 7 - 3) / 10})
    >>> model.score_one(usual) < 0.5 < model.score_one({"cost_rate_ratio": 4.0,
    ...     "cost_rate_z": 6.0, "invocations_ratio": 3.0, "invocations_z": 6.0})
    True
    """

    score_max = 1.0

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 500,
        seed: int = 42,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self._hst = anomaly.HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            seed=seed,
            limits={name: (0.0, 1.0) for name in FEATURE_NAMES},
        )
        self._n = 0
        self._names: tuple[str, ...] = ()

    def _params(self) -> dict[str, Any]:
        return {
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
        }

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"n_trees": 3, "height": 4, "window_size": 20, "seed": 1}

    @property
    def n(self) -> int:
        return self._n

    @property
    def is_warm(self) -> bool:
        return self._n >= self.window_size

    def _unit(self, x: Mapping[str, float]) -> dict[str, float]:
        units = unit_features(x)
        return {name: units[name] for name in self._names}

    def learn_one(self, x: Mapping[str, float], t: float | None = None) -> None:
        if not self._names:
            # The trees split only on the features the first window had:
            # splits on features that are never there would be wasted.
            self._names = tuple(n for n in FEATURE_NAMES if n in x) or FEATURE_NAMES
        # river leaves these two methods unannotated.
        self._hst.learn_one(self._unit(x))  # type: ignore[no-untyped-call]
        self._n += 1

    def score_one(self, x: Mapping[str, float], t: float | None = None) -> float:
        if self._n < self.window_size:
            return 0.0
        score = self._hst.score_one(self._unit(x))  # type: ignore[no-untyped-call]
        return float(min(max(score, 0.0), 1.0))
