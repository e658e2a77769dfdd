"""A model trained through ``dowguard train``'s path learns every feature it
is given variation in, and the bundled model was trained on the span counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from detector import training
from detector.engine import DetectorConfig
from detector.spanwindows import SKETCH_WAIT_S
from dowguard.cli import main
from dowguard.errors import ConfigError
from ingest.events import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    Context,
    Event,
    Invocation,
    Span,
    encode_event,
)
from models import offline
from models.features import FEATURE_NAMES

T0 = 1_772_400_000.0  # a window boundary
MINUTES = 30
WATCHED = Context("aws", "111122223333", "us-east-1", "resize", "$LATEST")
CALLERS = [
    Context("aws", "111122223333", "us-east-1", name, "$LATEST")
    for name in ("checkout", "refunds", "billing")
]
#: Three-minute stretches in which the calls come from three functions
#: rather than one; every other figure of the watched function stays put.
SPREAD = [(T0 + 60.0 * m, T0 + 60.0 * (m + 3)) for m in (6, 12, 18, 24)]
CONFIG = DetectorConfig(online_model=False, baseline_warmup=10)


def _spread(at: float) -> bool:
    return any(start <= at < end for start, end in SPREAD)


def _events() -> list[Event]:
    """Two calls a second of the watched function, each from a caller's
    invocation (a server span and its client span) calling it directly."""
    events: list[Event] = []
    for i in range(MINUTES * 60 * 2):
        at = T0 + i / 2 + 0.1
        caller = CALLERS[i % 3] if _spread(at) else CALLERS[0]
        tid, request = f"{i + 1:032x}", f"r{i}"
        root, out, callee = f"{1:016x}", f"{2:016x}", f"{3:016x}"
        events += [
            Span(caller, at, at + 0.3, tid, root, "", "POST /", SPAN_KIND_SERVER,
                 trigger="http", invocation_id=f"c{i}"),
            Span(caller, at + 0.02, at + 0.2, tid, out, root, "call",
                 SPAN_KIND_CLIENT),
            Span(WATCHED, at + 0.05, at + 0.15, tid, callee, out, "GET /",
                 SPAN_KIND_SERVER, trigger="http", invocation_id=request),
            Invocation(WATCHED, at + 0.05, request, 99.0, 100.0, 128, trace_id=tid),
        ]  # fmt: skip
    return sorted(events, key=lambda e: e.time)


def _recording(folder: Path) -> Path:
    folder.mkdir()
    lines = b"\n".join(encode_event(e) for e in _events())
    (folder / "events.jsonl").write_bytes(lines + b"\n")
    # A window's span counts are those of the window SKETCH_WAIT_S before
    # it, so the windows that show a stretch are that much later.
    scenarios = [
        {
            "context": WATCHED._asdict(),
            "onset": start + SKETCH_WAIT_S,
            "end": end + SKETCH_WAIT_S,
        }
        for start, end in SPREAD
    ]
    (folder / training.LABELS_FILE).write_text(json.dumps({"scenarios": scenarios}))
    return folder


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> offline.TrainingSet:
    folder = _recording(tmp_path_factory.mktemp("callers") / "rec")
    return training.collect([folder], CONFIG)


def _column(ts: offline.TrainingSet, name: str) -> list[float]:
    i = ts.features.index(name)
    return [row[i] for row in ts.rows]


def test_training_windows_read_the_span_counts_of_the_recording(
    windows: offline.TrainingSet,
) -> None:
    labels = windows.labels or []
    callers = _column(windows, "distinct_callers")
    seen = {(round(math.expm1(v), 6), y) for v, y in zip(callers, labels, strict=True)}
    # Three callers exactly in the labelled windows, one in all the others.
    assert seen == {(3.0, 1), (1.0, 0)}
    assert windows.positives == 4 * 18
    assert offline.non_neutral_rows(windows)["distinct_callers"] == len(labels)


def test_a_model_given_only_the_callers_to_go_by_ranks_on_them(
    windows: offline.TrainingSet,
) -> None:
    model = offline.fit(windows)
    assert model.metadata["non_neutral_rows"]["distinct_callers"] == len(windows.rows)
    assert model.metadata["scores"]["held_out_roc_auc"] >= 0.95
    assert offline.test_scores(model, windows)["test_roc_auc"] >= 0.95
    usual = {"distinct_triggers": math.log1p(1.0)}
    one = model.score_one({**usual, "distinct_callers": math.log1p(1.0)})
    three = model.score_one({**usual, "distinct_callers": math.log1p(3.0)})
    assert three >= model.threshold > one
    weights = offline.importances(model, windows)
    assert max(weights, key=lambda name: weights[name]) == "distinct_callers"
    assert weights["distinct_callers"] > 0.3


def test_held_neutral_the_callers_leave_the_model_at_chance(
    windows: offline.TrainingSet,
) -> None:
    names = ["distinct_callers"]
    scores = training.ablation(windows, windows, names)
    assert scores["neutral"] == names
    assert scores["scores"]["held_out_roc_auc"] == pytest.approx(0.5)
    assert scores["scores"]["test_roc_auc"] == pytest.approx(0.5)
    held = offline.neutralised(windows, names)
    assert offline.non_neutral_rows(held)["distinct_callers"] == 0
    assert held.rows != windows.rows and held.labels == windows.labels
    with pytest.raises(ConfigError, match="p99_duration_ratio"):
        offline.neutralised(windows, ["p99_duration_ratio"])


@pytest.mark.slow
def test_train_command_writes_importances_and_the_ablation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _recording(tmp_path / "rec")
    out = tmp_path / "models"
    args = ["train", str(folder), "--test", str(folder), "--out", str(out)]
    assert main([*args, "--ablate", "distinct_callers"]) == 0
    printed = capsys.readouterr().out
    assert "importances:" in printed and "ablation:" in printed
    meta = json.loads((out / "v1" / offline.META_FILE).read_text())
    assert meta["scores"]["test_roc_auc"] >= 0.95
    assert meta["ablation"]["scores"]["test_roc_auc"] == pytest.approx(0.5)
    assert meta["importances"]["distinct_callers"] > 0.3
    assert main([*args, "--ablate", "distinct_calers"]) == 1
    assert "distinct_calers: no such feature" in capsys.readouterr().err
    assert not (out / "v2").exists()


def test_evaluate_scores_with_the_model_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The model setting is read, not left aside: one that is not there fails.
    folder = _recording(tmp_path / "rec")
    absent = tmp_path / "absent"
    assert main(["evaluate", str(folder), "--model", str(absent)]) == 1
    assert str(absent) in capsys.readouterr().err


BUNDLED = Path(__file__).resolve().parents[2] / "models" / "bundled"


def test_the_newest_bundled_model_was_trained_on_the_span_counts() -> None:
    meta = offline.load(BUNDLED).metadata
    assert meta["version"] >= 3
    assert meta["features"] == list(FEATURE_NAMES)
    for name in ("distinct_triggers", "distinct_callers"):
        # Its training windows read spans: the counts were not all neutral.
        assert meta["non_neutral_rows"][name] > 0
        assert name in meta["importances"]
    assert meta["importances"]["distinct_callers"] > 0
    assert meta["ablation"]["neutral"] == ["distinct_triggers", "distinct_callers"]
