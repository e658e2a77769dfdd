"""Models trained or checkpointed before the span features still score."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

from models import offline
from models.features import FEATURE_NAMES, vector
from models.online import PooledModel

SPAN_FEATURES = ("distinct_triggers", "distinct_callers")
BEFORE = tuple(n for n in FEATURE_NAMES if n not in SPAN_FEATURES)
USUAL = {"cost_rate_ratio": 0.0, "cost_rate_z": 0.1, "invocations_ratio": 0.0}
ODD = {"cost_rate_ratio": 3.2, "cost_rate_z": 3.0, "invocations_ratio": 2.8}
#: What a window of a context with spans adds: many triggers and callers.
SPANS = {"distinct_triggers": 2.5, "distinct_callers": 3.0}


def training_set(seed: int = 4) -> offline.TrainingSet:
    """Labelled windows on the features from before the span features."""
    rng = random.Random(seed)
    rows, labels = [], []
    for i in range(300):
        attack = i % 20 == 0
        level = 3.0 if attack else 0.0
        features = {name: rng.gauss(level, 0.3) for name in BEFORE[:4]}
        rows.append(vector(features, BEFORE))
        labels.append(int(attack))
    return offline.TrainingSet(rows, labels, BEFORE, "cd" * 32, ["synthetic"])


def test_a_model_trained_without_the_span_features_loads_and_scores(
    tmp_path: Path,
) -> None:
    saved = offline.save(offline.fit(training_set()), tmp_path / "old")
    model = offline.load(tmp_path / "old")
    assert model.path == saved
    assert model.metadata["features"] == list(BEFORE)
    # The span features are not in its rows: they change none of its scores.
    assert model.score_one({**ODD, **SPANS}) == model.score_one(ODD)
    assert model.score_one({**USUAL, **SPANS}) == model.score_one(USUAL)
    assert model.score_one(ODD) >= model.threshold > model.score_one(USUAL)


def test_test_scores_take_the_columns_an_older_model_knows() -> None:
    model = offline.fit(training_set())
    newer = training_set(seed=5)
    # The same windows as the detector collects them today: every feature,
    # the span features at their neutral value.
    rows = [vector(dict(zip(BEFORE, row, strict=True))) for row in newer.rows]
    today = offline.TrainingSet(
        rows, newer.labels, FEATURE_NAMES, newer.data_hash, newer.sources
    )
    assert offline.test_scores(model, today) == offline.test_scores(model, newer)


def test_an_online_model_checkpointed_before_the_span_features_scores() -> None:
    model = PooledModel(**PooledModel._unit_test_params())
    rng = random.Random(3)
    for _ in range(60):
        model.learn_one({n: rng.gauss(0.0, 0.2) for n in BEFORE if n != "error_share"})
    restored = pickle.loads(pickle.dumps(model))
    # Its trees split on the features it first learned; the span features
    # of newer windows are left out of them.
    assert all(not set(SPAN_FEATURES) & set(names) for names, _ in restored._groups)
    assert restored.score_one({**ODD, **SPANS}) == model.score_one(ODD)
    assert restored.score_one(ODD) > restored.score_one(USUAL)
