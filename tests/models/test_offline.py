"""Offline models: fit, save, load older ones, refuse a mismatch; the train command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from dowguard.cli import main
from dowguard.errors import ConfigError
from models import offline
from models.features import FEATURE_NAMES, vector


def training_set(labelled: bool, seed: int = 4) -> offline.TrainingSet:
    """Usual windows near the neutral point; attack windows far above it."""
    rng = random.Random(seed)
    rows, labels = [], []
    for i in range(300):
        # Without labels the history is taken as it is: usual windows only.
        attack = labelled and i % 20 == 0
        level = 3.0 if attack else 0.0
        features = {name: rng.gauss(level, 0.3) for name in FEATURE_NAMES[:4]}
        rows.append(vector(features))
        labels.append(int(attack))
    return offline.TrainingSet(
        rows, labels if labelled else None, FEATURE_NAMES, "ab" * 32, ["synthetic"]
    )


USUAL = {"cost_rate_ratio": 0.0, "cost_rate_z": 0.1, "invocations_ratio": 0.0}
ODD = {"cost_rate_ratio": 3.2, "cost_rate_z": 3.0, "invocations_ratio": 2.8}


@pytest.mark.parametrize(
    ("labelled", "kind"),
    [(True, offline.GRADIENT_BOOSTING), (False, offline.ISOLATION_FOREST)],
)
def test_fit_save_load_round_trip_keeps_scores(
    tmp_path: Path, labelled: bool, kind: str
) -> None:
    model = offline.fit(training_set(labelled))
    assert model.kind == kind
    folder = offline.save(model, tmp_path / "demo")
    assert folder == tmp_path / "demo" / "v1"
    meta = json.loads((folder / offline.META_FILE).read_text())
    assert meta["features"] == list(FEATURE_NAMES)
    assert meta["training_data_sha256"] == "ab" * 32
    assert meta["version"] == 1 and meta["rows"] == 300
    assert meta["positives"] == (15 if labelled else 0)
    assert meta["sklearn_version"] and meta["trained_at"] and meta["scores"]
    loaded = offline.load(tmp_path / "demo")
    for x in (USUAL, ODD, {}):
        assert loaded.score_one(x) == model.score_one(x)
        assert 0.0 <= loaded.score_one(x) <= 1.0
    assert loaded.score_one(ODD) >= loaded.threshold > loaded.score_one(USUAL)


def test_each_training_adds_a_version_and_load_takes_the_newest(
    tmp_path: Path,
) -> None:
    model = offline.fit(training_set(False))
    offline.save(model, tmp_path / "m")
    second = offline.save(offline.fit(training_set(True)), tmp_path / "m")
    assert second.name == "v2"
    assert offline.load(tmp_path / "m").metadata["version"] == 2
    assert offline.load(tmp_path / "m" / "v1").kind == offline.ISOLATION_FOREST


def test_model_trained_on_other_features_is_refused(tmp_path: Path) -> None:
    folder = offline.save(offline.fit(training_set(False)), tmp_path / "m")
    meta_path = folder / offline.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["features"] = [*meta["features"][:-1], "p99_duration_ratio"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="p99_duration_ratio") as caught:
        offline.load(tmp_path / "m")
    assert "distinct_callers" in str(caught.value)
    assert "dowguard train" in str(caught.value)


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metadata\.json"):
        offline.load(tmp_path / "nothing")


def test_classifier_needs_both_kinds_of_label() -> None:
    data = training_set(False)
    unlabelled = offline.TrainingSet(
        data.rows, [0] * len(data.rows), data.features, data.data_hash, []
    )
    with pytest.raises(ConfigError, match="both"):
        offline.fit(unlabelled, offline.GRADIENT_BOOSTING)
    assert offline.fit(unlabelled).kind == offline.ISOLATION_FOREST


@pytest.mark.slow
def test_train_command_fits_labelled_recording_and_replay_loads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dowguard.simulate import config_for, generate

    recording = tmp_path / "rec"
    generate(recording, config_for(seed=3, minutes=25.0, scenarios=("spike",)))
    out = tmp_path / "models" / "spiky"
    args = ["train", str(recording), "--out", str(out), "--test", str(recording)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "gradient_boosting" in printed and str(out / "v1") in printed
    meta = json.loads((out / "v1" / offline.META_FILE).read_text())
    assert meta["positives"] > 0 and meta["sources"] == [str(recording)]
    # Scored on its own training windows here, so far above chance.
    assert meta["scores"]["test_roc_auc"] > 0.9
    assert meta["test_sources"] == [str(recording)]
    code = main(["replay", str(recording), "--no-store", "--json", "--model", str(out)])
    assert code == 0
    alerts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    spikes = [a for a in alerts if a["kind"] == "cost_spike"]
    assert spikes and spikes[0]["context"]["function"] == "image-resize"
    # A replay refuses a model that reads a feature the detector lacks.
    meta["features"] = [*meta["features"][:-1], "p99_duration_ratio"]
    (out / "v1" / offline.META_FILE).write_text(json.dumps(meta))
    assert main(["replay", str(recording), "--no-store", "--model", str(out)]) == 1
    assert "trained on features" in capsys.readouterr().err


def test_model_path_setting_gives_the_engine_its_model(tmp_path: Path) -> None:
    from dowguard.cli import make_engine
    from dowguard.config import load_settings

    offline.save(offline.fit(training_set(False)), tmp_path / "m")
    engine = make_engine(load_settings(model_path=str(tmp_path / "m")))
    assert engine.offline_model.kind == offline.ISOLATION_FOREST
    assert make_engine(load_settings(model_path="")).offline_model is None
    with pytest.raises(ConfigError, match="no metadata"):
        make_engine(load_settings(model_path=str(tmp_path / "absent")))


BUNDLED = Path(__file__).resolve().parents[2] / "models" / "bundled"


def test_bundled_model_loads_and_flags_a_flood_but_not_a_usual_window() -> None:
    model = offline.load(BUNDLED)
    assert model.metadata["version"] >= 2
    assert model.metadata["features"] == list(FEATURE_NAMES)
    flood = {
        "cost_rate_ratio": 3.0,
        "cost_rate_z": 6.0,
        "invocations_ratio": 3.0,
        "invocations_z": 8.0,
        "gb_seconds_ratio": 3.0,
    }
    assert model.score_one(flood) >= model.threshold > model.score_one({})


def test_bundled_model_of_the_old_features_loads_and_reads_its_own() -> None:
    # Version 1 was trained before the features of the calls' duration and
    # GB-seconds: it scores on the columns it names, whatever else comes.
    model = offline.load(BUNDLED / "v1")
    assert "gb_seconds_ratio" not in model.metadata["features"]
    flood = {
        "cost_rate_ratio": 3.0,
        "cost_rate_z": 6.0,
        "invocations_ratio": 3.0,
        "invocations_z": 8.0,
    }
    newer = {"gb_seconds_ratio": 5.0, "peak_duration_ratio": -4.0}
    assert model.score_one({**flood, **newer}) == model.score_one(flood)
    assert model.score_one(flood) > model.score_one({})


def test_test_scores_rank_the_attacks_of_other_windows() -> None:
    model = offline.fit(training_set(True))
    scores = offline.test_scores(model, training_set(True, seed=5))
    assert scores["test_roc_auc"] > 0.9 and scores["test_rows"] == 300
    assert 0.0 < scores["test_recall"] <= 1.0
    unlabelled = training_set(False)
    with pytest.raises(ConfigError, match="both kinds"):
        offline.test_scores(model, unlabelled)
