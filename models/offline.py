"""Models trained offline on recorded history: fitting, saving, loading.

A trained model is a directory ``models/NAME/vN/`` holding ``model.joblib``
(the fitted scikit-learn estimator) and ``metadata.json`` (its kind, the
feature names in order, a hash of the training data, the date, the
scikit-learn version, its scores and its alert threshold). Each training
into the same ``models/NAME`` adds the next version; loading ``models/NAME``
takes the newest. A model reads its columns by the names its metadata
lists, so one trained before a feature existed still scores, without it; a
model that names a feature the detector does not compute is refused, since
that column would mean nothing.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dowguard.errors import ConfigError
from models.features import BY_NAME, FEATURE_NAMES, vector

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.joblib"
META_FILE = "metadata.json"
ISOLATION_FOREST = "isolation_forest"
GRADIENT_BOOSTING = "gradient_boosting"
#: Share of the training windows an unsupervised model may flag.
UNSUPERVISED_QUANTILE = 0.999
#: Probability of the attack class from which a classifier flags a window.
CLASSIFIER_THRESHOLD = 0.9
#: Shuffles of each column when its importance is measured.
IMPORTANCE_REPEATS = 3


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Feature rows of recorded windows, with labels when the data had them."""

    rows: list[list[float]]
    labels: list[int] | None
    features: tuple[str, ...]
    data_hash: str
    sources: list[str]

    @property
    def positives(self) -> int:
        return sum(self.labels) if self.labels else 0


@dataclass(slots=True)
class OfflineModel:
    """A loaded model: scores a window's features in ``[0, 1]``.

    Missing features are put at their neutral value, as for the online
    model. Windows scoring ``threshold`` or more are anomalous.
    """

    estimator: Any
    metadata: dict[str, Any]
    path: Path

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def kind(self) -> str:
        return str(self.metadata["kind"])

    def score_one(self, x: Mapping[str, float]) -> float:
        return self.score_rows([vector(x, tuple(self.metadata["features"]))])[0]

    def score_rows(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Scores of feature rows in the order of the model's feature list."""
        if self.kind == GRADIENT_BOOSTING:
            return [float(p) for p in self.estimator.predict_proba(rows)[:, 1]]
        # IsolationForest's score_samples is minus the anomaly score of its
        # paper, which lies in (0, 1].
        raw = self.estimator.score_samples(rows)
        return [float(min(max(-s, 0.0), 1.0)) for s in raw]


_single_threaded = False


def single_threaded() -> None:
    """Keep scikit-learn's OpenMP to one thread in this process, from now on.

    Its threads spin while they wait: on a shared machine, and for one row
    or a few thousand, they cost far more than they give.
    """
    global _single_threaded
    if not _single_threaded:
        # threadpoolctl limits only the runtimes loaded so far: load them.
        import sklearn.ensemble  # noqa: F401
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="openmp")
        _single_threaded = True


def fit(training: TrainingSet, kind: str = "auto", seed: int = 0) -> OfflineModel:
    """Fit a classifier when there are labels of both kinds, else a forest."""
    if not training.rows:
        raise ConfigError("train: the recordings gave no window of a warm context")
    labels = training.labels or []
    both = 0 < training.positives < len(labels)
    if kind == "auto":
        kind = GRADIENT_BOOSTING if both else ISOLATION_FOREST
    if kind == GRADIENT_BOOSTING and not both:
        raise ConfigError(
            "train: a gradient-boosted classifier needs labelled windows of both"
            f" kinds; got {training.positives} attack windows of {len(labels)}"
        )
    if kind not in (GRADIENT_BOOSTING, ISOLATION_FOREST):
        raise ConfigError(f"train: unknown model kind {kind!r}")
    single_threaded()
    if kind == GRADIENT_BOOSTING:
        estimator, scores, threshold = _fit_classifier(training, seed)
    else:
        estimator, scores, threshold = _fit_forest(training, seed)
    import sklearn

    metadata = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "features": list(training.features),
        "training_data_sha256": training.data_hash,
        "sources": training.sources,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sklearn_version": sklearn.__version__,
        "rows": len(training.rows),
        "positives": training.positives,
        "threshold": threshold,
        "scores": scores,
        "seed": seed,
    }
    varied = non_neutral_rows(training)
    constant = [name for name, n in varied.items() if n == 0]
    if constant:
        # A feature that never leaves its neutral value is one the model
        # cannot learn: it reads it and nothing it does changes a score.
        logger.warning(
            "train features at their neutral value in every window features=%s",
            ",".join(constant),
        )
    metadata["non_neutral_rows"] = varied
    return OfflineModel(estimator, metadata, Path())


def _neutral(name: str) -> float:
    feature = BY_NAME.get(name)
    return feature.neutral if feature is not None else 0.0


def non_neutral_rows(training: TrainingSet) -> dict[str, int]:
    """Per feature, the rows in which it is not at its neutral value."""
    counts = dict.fromkeys(training.features, 0)
    neutral = [_neutral(name) for name in training.features]
    for row in training.rows:
        for name, value, usual in zip(training.features, row, neutral, strict=True):
            if value != usual:
                counts[name] += 1
    return counts


def neutralised(training: TrainingSet, names: Sequence[str]) -> TrainingSet:
    """The same windows with the features ``names`` at their neutral value.

    Fitted with the same seed, a model of these rows is the one the data
    would give had the detector not counted those features: an ablation.
    """
    unknown = [name for name in names if name not in training.features]
    if unknown:
        raise ConfigError(
            f"train: cannot hold {unknown} neutral: the windows have features"
            f" {list(training.features)}"
        )
    columns = [(training.features.index(name), _neutral(name)) for name in names]
    rows = []
    for row in training.rows:
        copy = list(row)
        for i, value in columns:
            copy[i] = value
        rows.append(copy)
    return TrainingSet(
        rows, training.labels, training.features, training.data_hash, training.sources
    )


def _both_kinds(test: TrainingSet, need: str) -> list[int]:
    """The labels of ``test``, refused if they lack attacks or ordinary windows."""
    labels = test.labels
    if not labels or not 0 < test.positives < len(labels):
        raise ConfigError(
            f"train: {need} labelled windows of both kinds;"
            f" got {test.positives} attack windows of {len(test.rows)}"
        )
    return labels


def importances(
    model: OfflineModel, test: TrainingSet, seed: int = 0
) -> dict[str, float]:
    """How much the ROC AUC on ``test`` falls when one feature is shuffled.

    Per feature of the model, the mean fall over ``IMPORTANCE_REPEATS``
    shuffles of its column; 0 for a feature the model does not use (or
    that does not vary in ``test``).
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    labels = _both_kinds(test, "importances need")
    known = list(model.metadata["features"])
    columns = [list(test.features).index(name) for name in known]
    x = np.asarray(test.rows, dtype=float)[:, columns]
    base = float(roc_auc_score(labels, model.score_rows(x.tolist())))
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for i, name in enumerate(known):
        falls = []
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = x.copy()
            shuffled[:, i] = rng.permutation(shuffled[:, i])
            fell = roc_auc_score(labels, model.score_rows(shuffled.tolist()))
            falls.append(base - float(fell))
        out[name] = round(sum(falls) / len(falls), 4)
    return out


def _fit_classifier(
    training: TrainingSet, seed: int
) -> tuple[Any, dict[str, float], float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    labels = training.labels or []
    x_fit, x_test, y_fit, y_test = train_test_split(
        training.rows, labels, test_size=0.3, random_state=seed, stratify=labels
    )
    model = HistGradientBoostingClassifier(
        max_iter=100, class_weight="balanced", random_state=seed
    )
    model.fit(x_fit, y_fit)
    held_out = model.predict_proba(x_test)[:, 1]
    flagged = [p >= CLASSIFIER_THRESHOLD for p in held_out]
    hits = sum(1 for f, y in zip(flagged, y_test, strict=True) if f and y)
    scores = {
        "held_out_roc_auc": round(float(roc_auc_score(y_test, held_out)), 4),
        "held_out_average_precision": round(
            float(average_precision_score(y_test, held_out)), 4
        ),
        "held_out_recall": round(hits / max(sum(y_test), 1), 4),
        "held_out_precision": round(hits / max(sum(flagged), 1), 4),
        "held_out_rows": len(y_test),
    }
    # The estimator kept is refitted on every window, held-out ones included.
    model.fit(training.rows, labels)
    return model, scores, CLASSIFIER_THRESHOLD


def _fit_forest(
    training: TrainingSet, seed: int
) -> tuple[Any, dict[str, float], float]:
    import numpy as np
    from sklearn.ensemble import IsolationForest

    model = IsolationForest(n_estimators=100, random_state=seed)
    model.fit(training.rows)
    train_scores = -model.score_samples(training.rows)
    threshold = float(np.quantile(train_scores, UNSUPERVISED_QUANTILE))
    scores: dict[str, float] = {
        "train_score_median": round(float(np.median(train_scores)), 4),
        "train_score_q999": round(threshold, 4),
    }
    labels = training.labels
    if labels and 0 < training.positives < len(labels):
        from sklearn.metrics import roc_auc_score

        scores["train_roc_auc"] = round(float(roc_auc_score(labels, train_scores)), 4)
    return model, scores, round(threshold, 6)


def test_scores(model: OfflineModel, test: TrainingSet) -> dict[str, float]:
    """Scores of a model on labelled windows of other recordings.

    ROC AUC and average precision over every window, and precision and
    recall of the windows at or above the model's threshold.
    """
    labels = _both_kinds(test, "test recordings need")
    from sklearn.metrics import average_precision_score, roc_auc_score

    known = list(model.metadata["features"])
    if not set(known) <= set(test.features):
        raise ConfigError(
            f"train: test windows have features {list(test.features)}, the model"
            f" {known}"
        )
    columns = [list(test.features).index(name) for name in known]
    scores = model.score_rows([[row[i] for i in columns] for row in test.rows])
    flagged = [s >= model.threshold for s in scores]
    hits = sum(1 for f, y in zip(flagged, labels, strict=True) if f and y)
    return {
        "test_roc_auc": round(float(roc_auc_score(labels, scores)), 4),
        "test_average_precision": round(
            float(average_precision_score(labels, scores)), 4
        ),
        "test_recall": round(hits / test.positives, 4),
        "test_precision": round(hits / max(sum(flagged), 1), 4),
        "test_rows": len(labels),
    }


def save(model: OfflineModel, out: str | Path) -> Path:
    """Write the model as the next version under ``out``; returns its folder."""
    import joblib

    base = Path(out)
    version = max((v for v, _ in _versions(base)), default=0) + 1
    folder = base / f"v{version}"
    folder.mkdir(parents=True, exist_ok=False)
    metadata = {**model.metadata, "name": base.name, "version": version}
    joblib.dump(model.estimator, folder / MODEL_FILE)
    (folder / META_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    model.metadata = metadata
    model.path = folder
    logger.info("model saved path=%s kind=%s", folder, metadata["kind"])
    return folder


def _versions(base: Path) -> list[tuple[int, Path]]:
    if not base.is_dir():
        return []
    found = []
    for child in base.iterdir():
        match = re.fullmatch(r"v(\d+)", child.name)
        if match and (child / META_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve(path: str | Path) -> Path:
    """The version folder ``path`` names: itself, or its newest version."""
    folder = Path(path)
    if (folder / META_FILE).is_file():
        return folder
    versions = _versions(folder)
    if not versions:
        raise ConfigError(f"model {folder}: no {META_FILE} there nor in a vN folder")
    return versions[-1][1]


def load(path: str | Path, features: Sequence[str] = FEATURE_NAMES) -> OfflineModel:
    """Load a saved model, refusing one that reads a feature not in ``features``.

    One trained on fewer of them (before some existed) loads and scores on
    those it knows; the others are left out of its rows.
    """
    folder = resolve(path)
    meta_path = folder / META_FILE
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {meta_path}: unreadable metadata: {exc}") from exc
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"model {meta_path}: format_version {metadata.get('format_version')!r},"
            f" this dowguard reads {FORMAT_VERSION}"
        )
    trained = list(metadata.get("features", []))
    missing = [f for f in features if f not in trained]
    extra = [f for f in trained if f not in features]
    if extra or not trained or len(set(trained)) != len(trained):
        raise ConfigError(
            f"model {meta_path}: trained on features {trained}, but the detector"
            f" computes {list(features)} (missing from the model: {missing},"
            f" unknown to the detector: {extra}); retrain it with `dowguard train`"
        )
    if missing:
        logger.info(
            "model reads fewer features path=%s unread=%s", folder, ",".join(missing)
        )
    threshold = metadata.get("threshold")
    if not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ConfigError(f"model {meta_path}: threshold {threshold!r} is no number")
    import joblib
    import sklearn

    if metadata.get("sklearn_version") != sklearn.__version__:
        logger.warning(
            "model sklearn version differs path=%s trained=%s running=%s",
            folder,
            metadata.get("sklearn_version"),
            sklearn.__version__,
        )
    # Limitation: joblib files run code when loaded; load only models you trained.
    try:
        estimator = joblib.load(folder / MODEL_FILE)
    except (OSError, ValueError, EOFError, ImportError) as exc:
        raise ConfigError(f"model {folder / MODEL_FILE}: unreadable: {exc}") from exc
    fitted = getattr(estimator, "n_features_in_", len(trained))
    if fitted != len(trained):
        raise ConfigError(
            f"model {folder / MODEL_FILE}: fitted on {fitted} features, but its"
            f" metadata lists {len(trained)}; retrain it with `dowguard train`"
        )
    single_threaded()
    logger.info("model loaded path=%s kind=%s", folder, metadata["kind"])
    return OfflineModel(estimator, metadata, folder)
