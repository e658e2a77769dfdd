"""The pooled online model's two ensembles: cost and count, and the calls."""

from __future__ import annotations

import pickle
import random

from models.features import FEATURE_NAMES, unit_features
from models.online import GROUPS, PooledModel

CALLS = GROUPS[1]


def usual(rng: random.Random) -> dict[str, float]:
    x = {name: rng.gauss(0.0, 0.1) for name in FEATURE_NAMES}
    x["error_share_excess"] = rng.gauss(0.0, 0.01)
    x["cold_start_share"] = abs(rng.gauss(0.02, 0.01))
    del x["distinct_triggers"], x["distinct_callers"]
    return x


def learned(n: int = 300) -> PooledModel:
    model = PooledModel(**PooledModel._unit_test_params())
    rng = random.Random(2)
    for _ in range(n):
        model.learn_one(usual(rng))
    return model


def test_each_group_splits_on_the_features_the_first_window_had() -> None:
    model = learned()
    names = [names for names, _ in model._groups]
    assert names[0] == GROUPS[0]
    assert names[1] == tuple(n for n in CALLS if not n.startswith("distinct_"))


def test_a_window_odd_only_in_its_calls_scores_above_usual_ones() -> None:
    model = learned()
    rng = random.Random(8)
    usual_scores = [model.score_one(usual(rng)) for _ in range(30)]
    storm = {**usual(rng), "error_share_excess": 0.8, "cold_start_share": 0.6}
    slow = {**usual(rng), "peak_duration_ratio": 3.0, "gb_seconds_ratio": 2.5}
    assert model.score_one(storm) > max(usual_scores)
    assert model.score_one(slow) > max(usual_scores)


def test_a_model_pickled_before_the_groups_goes_on_with_its_one_ensemble() -> None:
    model = learned()
    names, hst = model._groups[0]
    state = dict(model.__dict__)
    del state["_groups"]
    state["_hst"], state["_names"] = hst, names
    old = PooledModel.__new__(PooledModel)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    probe = {"cost_rate_ratio": 3.0, "cost_rate_z": 5.0, "invocations_z": 4.0}
    assert [n for n, _ in old._groups] == [names]
    units = unit_features(probe)
    expected = hst.score_one({n: units[n] for n in names})
    assert old.score_one(probe) == expected > model.score_one({})
    old.learn_one(probe)
    assert old.n == model.n + 1
