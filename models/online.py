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

#: The features each ensemble of trees splits on: how much a window costs
#: and how many calls it has, and what its calls are like. Half-Space
#: Trees lose sensitivity with every feature they split on that does not
#: deviate (a split on it passes the odd window down with the usual ones),
#: so a rise in cost would be diluted by six features of the calls, which
#: have their own trees instead. The plain error share stays out: its
#: excess over the context's usual share says the same, per context.
GROUPS: tuple[tuple[str, ...], ...] = (
    (
        "cost_rate_ratio",
        "cost_rate_z",
        "invocations_ratio",
        "invocations_z",
        "cost_per_invocation_ratio",
    ),
    (
        "error_share_excess",
        "cold_start_share",
        "gb_seconds_ratio",
        "peak_duration_ratio",
        "distinct_triggers",
        "distinct_callers",
    ),
)


class PooledModel(Detector):
    """River's Half-Space Trees on the unit-scaled features of windows.

    Half-Space Trees (Tan, Ting and Liu, 2011) split the unit cube at
    random and score a point by how little mass the reference window put
    where it falls. Features are mapped into ``[0, 1]`` first (see
    :meth:`models.features.Feature.unit`); a missing feature is put at its
    neutral point, as if it were unremarkable, because the trees would
    otherwise read an absent value as an extreme one. There is one
    ensemble per group of :data:`GROUPS`, splitting only on the features
    of its group that the first window it learned had; a window scores the
    higher of the ensembles' scores.

    Scores are in ``[0, 1]``; an ensemble scores 0 until it has learned
    ``window_size`` windows (see :attr:`is_warm`).

    Parameters
    ----------
    n_trees, height, window_size, seed
        Those of :class:`river.anomaly.HalfSpaceTrees`, for each ensemble.

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
        # Per group: the features its trees split on (none until the first
        # window with one of them), the trees, and the windows they learned.
        self._groups: list[tuple[tuple[str, ...], anomaly.HalfSpaceTrees]] = []
        self._n = 0
        self._names: tuple[str, ...] = ()

    def __setstate__(self, state: Any) -> None:
        # A checkpoint from before the groups holds one ensemble over the
        # features of the first group; it goes on with that one alone.
        if "_groups" not in state:
            hst = state.pop("_hst")
            state["_groups"] = [(state["_names"], hst)] if state["_names"] else []
        self.__dict__.update(state)

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

    def _ensemble(self, names: tuple[str, ...], index: int) -> anomaly.HalfSpaceTrees:
        return anomaly.HalfSpaceTrees(
            n_trees=self.n_trees,
            height=self.height,
            window_size=self.window_size,
            # Each group its own seed: the same splits in every ensemble
            # would tie their errors together.
            seed=self.seed + index,
            limits={name: (0.0, 1.0) for name in names},
        )

    def learn_one(self, x: Mapping[str, float], t: float | None = None) -> None:
        if not self._names:
            # Splits on features that are never there would be wasted.
            # Limitation: a feature the first window learned lacked is never split on.
            self._names = tuple(n for n in FEATURE_NAMES if n in x) or FEATURE_NAMES
            for index, group in enumerate(GROUPS):
                names = tuple(n for n in group if n in self._names)
                if names:
                    self._groups.append((names, self._ensemble(names, index)))
        units = unit_features(x)
        for names, hst in self._groups:
            # river leaves these two methods unannotated.
            hst.learn_one({n: units[n] for n in names})  # type: ignore[no-untyped-call]
        self._n += 1

    def score_one(self, x: Mapping[str, float], t: float | None = None) -> float:
        if self._n < self.window_size:
            return 0.0
        units = unit_features(x)
        score = 0.0
        for names, hst in self._groups:
            one = hst.score_one({n: units[n] for n in names})  # type: ignore[no-untyped-call]
            score = max(score, one)
        return float(min(max(score, 0.0), 1.0))
