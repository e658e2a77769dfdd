"""The river-style contract, checked on every detector alike."""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest

from detector.baseline import RobustBaseline, SeasonalBaseline
from models.base import Detector
from models.features import FEATURE_NAMES
from models.online import PooledModel

DETECTORS: list[type[Detector]] = [RobustBaseline, SeasonalBaseline, PooledModel]
STEP_S = 600.0


def sample(cls: type[Detector], i: int, rng: random.Random, odd: bool = False) -> Any:
    """One observation: usual ones near 1 (or 0 for features), odd ones far."""
    if cls is PooledModel:
        scale = 4.0 if odd else 0.15
        return {name: rng.gauss(scale if odd else 0.0, 0.15) for name in FEATURE_NAMES}
    return rng.gauss(12.0 if odd else 1.0, 0.1)


def learned(cls: type[Detector], n: int = 300) -> Detector:
    detector = cls(**cls._unit_test_params())
    rng = random.Random(5)
    for i in range(n):
        detector.learn_one(sample(cls, i, rng), i * STEP_S)
    return detector


def probes(cls: type[Detector]) -> list[tuple[Any, float, bool]]:
    rng = random.Random(9)
    out = []
    for i in range(40):
        odd = i % 4 == 0
        out.append((sample(cls, i, rng, odd), 300 * STEP_S + i * STEP_S, odd))
    return out


@pytest.fixture(params=DETECTORS, ids=lambda c: c.__name__)
def cls(request: pytest.FixtureRequest) -> type[Detector]:
    return request.param  # type: ignore[no-any-return]


def test_constructor_keeps_only_parameters_under_public_names(
    cls: type[Detector],
) -> None:
    detector = learned(cls)
    # What a pickle keeps: the instance dict, or the slots of a slotted one.
    public = {k for k in detector.__getstate__() if not k.startswith("_")}
    assert public == set(detector._params())


def test_clone_is_unlearned_with_the_same_parameters(cls: type[Detector]) -> None:
    detector = learned(cls)
    clone = detector.clone()
    fresh = cls(**cls._unit_test_params())
    assert repr(clone) == repr(detector) == repr(fresh)
    assert pickle.dumps(clone) == pickle.dumps(fresh)
    odd = next(x for x, _, is_odd in probes(cls) if is_odd)
    assert detector.score_one(odd, 301 * STEP_S) != clone.score_one(odd, 301 * STEP_S)


def test_pickle_round_trip_gives_identical_scores(cls: type[Detector]) -> None:
    detector = learned(cls)
    copy = pickle.loads(pickle.dumps(detector))
    for x, t, _ in probes(cls):
        assert copy.score_one(x, t) == detector.score_one(x, t)
    more = random.Random(3)
    for i in range(50):
        x = sample(cls, i, more)
        detector.learn_one(x, (400 + i) * STEP_S)
        copy.learn_one(x, (400 + i) * STEP_S)
    for x, t, _ in probes(cls):
        assert copy.score_one(x, t + 100 * STEP_S) == detector.score_one(
            x, t + 100 * STEP_S
        )


def test_scores_lie_in_the_documented_range_and_rank_odd_above_usual(
    cls: type[Detector],
) -> None:
    detector = learned(cls)
    scored = [(detector.score_one(x, t), odd) for x, t, odd in probes(cls)]
    assert all(0.0 <= s <= detector.score_max for s, _ in scored)
    usual = [s for s, odd in scored if not odd]
    odd = [s for s, is_odd in scored if is_odd]
    # Every odd observation outranks every usual one (an AUC of 1).
    assert min(odd) > max(usual)


def test_score_one_handles_missing_feature(cls: type[Detector]) -> None:
    detector = learned(cls)
    before = pickle.dumps(detector)
    if cls is PooledModel:
        neutral = {name: 0.0 for name in FEATURE_NAMES}
        assert detector.score_one({}) == detector.score_one(neutral)
        partial = {"cost_rate_ratio": 5.0, "cost_rate_z": 6.0}
        assert detector.score_one(partial) > detector.score_one(neutral)
        detector.learn_one({"cost_rate_ratio": 0.1})
        assert pickle.dumps(detector) != before
    else:
        for missing in (None, math.nan):
            assert detector.score_one(missing, 0.0) == 0.0
            detector.learn_one(missing, 301 * STEP_S)
            detector.learn_paused(missing, 301 * STEP_S)  # type: ignore[attr-defined]
        # Nothing was learned from the missing values.
        assert pickle.dumps(detector) == before


def test_unwarmed_model_scores_zero() -> None:
    model = PooledModel(**PooledModel._unit_test_params())
    assert not model.is_warm
    assert model.score_one({"cost_rate_ratio": 9.0}) == 0.0


@pytest.mark.parametrize(
    ("name", "value"), [("cycle_weight", 0.0), ("alert_weight", 1.5), ("window_s", 0)]
)
def test_seasonal_baseline_refuses_bad_parameters(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        SeasonalBaseline(**{name: value})
