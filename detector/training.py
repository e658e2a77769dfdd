"""``dowguard train``: fit an offline model on the window features of recordings.

Each recording is replayed through its own detector, exactly as ``dowguard
replay`` would, and every closed window of a warm context gives one row of
:data:`models.features.FEATURE_NAMES`. A recording's ``labels.json`` (as
``dowguard simulate`` writes) marks the windows of each scenario's context
between its onset and its end as attacks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.engine import DetectorConfig, Engine
from detector.replay import Replay
from dowguard.errors import ConfigError, DowError, ParseError
from ingest.events import Context
from models import offline
from models.features import FEATURE_NAMES, vector

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.json"


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def data_hash(paths: Sequence[Path]) -> str:
    """SHA-256 over the names and bytes of every file of the recordings."""
    digest = hashlib.sha256()
    for path in paths:
        for file in _files(path):
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def scenario_spans(path: Path) -> dict[Context, list[tuple[float, float]]] | None:
    """Attack spans per context from a recording's labels, or ``None``."""
    folder = path if path.is_dir() else path.parent
    labels_path = folder / LABELS_FILE
    if not labels_path.is_file():
        return None
    try:
        labels = json.loads(labels_path.read_text())
        spans: dict[Context, list[tuple[float, float]]] = {}
        for scenario in labels.get("scenarios", []):
            context = Context(**scenario["context"])
            span = (float(scenario["onset"]), float(scenario["end"]))
            spans.setdefault(context, []).append(span)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"train: labels {labels_path}: {exc!r}") from exc
    return spans


class _Tap:
    """Takes the features of each warm window of one recording's replay."""

    def __init__(
        self, spans: dict[Context, list[tuple[float, float]]], window_s: float
    ) -> None:
        self.spans = spans
        self.window_s = window_s
        self.rows: list[list[float]] = []
        self.labels: list[int] = []

    def __call__(self, context: Context, start: float, x: dict[str, float]) -> None:
        self.rows.append(vector(x))
        # A window that overlaps the scenario at all is one of its windows.
        # Limitation: span counts come SKETCH_WAIT_S late, so a scenario's first
        # windows train without its callers and those just after it with them.
        early = start + self.window_s
        spans = self.spans.get(context, ())
        self.labels.append(int(any(on < early and start < end for on, end in spans)))


def collect(
    paths: Sequence[Path], config: DetectorConfig | None = None
) -> offline.TrainingSet:
    """Replay each recording and gather its windows' features and labels."""
    from ingest.parse import read_paths

    config = config or DetectorConfig()
    rows: list[list[float]] = []
    labels: list[int] = []
    labelled = True
    skipped = 0

    def skip(error: ParseError) -> None:
        nonlocal skipped
        skipped += 1
        logger.warning("train skipped record error=%s", error)

    for path in paths:
        if not path.exists():
            raise DowError(f"train: no such file or directory: {path}")
        spans = scenario_spans(path)
        labelled = labelled and spans is not None
        tap = _Tap(spans or {}, config.window_s)
        engine = Engine(config)
        engine.on_window = tap
        Replay(engine).run(read_paths([path], skip))
        rows += tap.rows
        labels += tap.labels
    logger.info("train collected rows=%d skipped=%d", len(rows), skipped)
    return offline.TrainingSet(
        rows,
        labels if labelled else None,
        FEATURE_NAMES,
        data_hash(paths),
        [str(p) for p in paths],
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="fit an offline model on recorded history",
        description=(
            "Replay recordings through the detector, take the features of every "
            "window of a warm context, and fit a gradient-boosted classifier "
            "(when labels.json marks attacks) or an IsolationForest; save it "
            "with its metadata as the next version under --out."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="RECORDING", type=Path)
    p.add_argument("--out", type=Path, default=Path("models/trained"))
    p.add_argument(
        "--kind",
        choices=("auto", offline.GRADIENT_BOOSTING, offline.ISOLATION_FOREST),
        default="auto",
        help="auto: a classifier when labels exist, else a forest",
    )
    p.add_argument(
        "--test",
        nargs="+",
        type=Path,
        default=[],
        metavar="RECORDING",
        help="labelled recordings to score the fitted model on (test_* scores)",
    )
    p.add_argument(
        "--ablate",
        nargs="+",
        default=[],
        metavar="FEATURE",
        help=(
            "also fit, in the same run and on the same windows, a model with"
            " these features held at their neutral value, and score it beside"
            " the saved one (ablation in the metadata; nothing else is saved)"
        ),
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, help="window length in seconds")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    config = DetectorConfig(online_model=False)
    if args.window:
        config = DetectorConfig(window_s=args.window, online_model=False)
    unknown = [name for name in args.ablate if name not in FEATURE_NAMES]
    if unknown:
        raise ConfigError(
            f"train: --ablate {' '.join(unknown)}: no such feature; the features"
            f" are {', '.join(FEATURE_NAMES)}"
        )
    training = collect(args.paths, config)
    model = offline.fit(training, args.kind, args.seed)
    meta = model.metadata
    test = collect(args.test, config) if args.test else None
    if test is not None:
        meta["scores"].update(offline.test_scores(model, test))
        meta["test_sources"] = test.sources
        meta["test_data_sha256"] = test.data_hash
        if test.labels and 0 < test.positives < len(test.labels):
            meta["importances"] = offline.importances(model, test, args.seed)
    if args.ablate:
        meta["ablation"] = ablation(training, test, args.ablate, args.kind, args.seed)
    folder = offline.save(model, args.out)
    sys.stdout.write(
        f"trained {meta['kind']} on {meta['rows']} windows"
        f" ({meta['positives']} labelled attack windows)\n"
        f"scores: {json.dumps(meta['scores'])}; threshold {meta['threshold']}\n"
    )
    if "importances" in meta:
        sys.stdout.write(f"importances: {json.dumps(meta['importances'])}\n")
    if "ablation" in meta:
        sys.stdout.write(f"ablation: {json.dumps(meta['ablation'])}\n")
    sys.stdout.write(f"saved {folder}\n")
    sys.stdout.flush()
    return 0


def ablation(
    training: offline.TrainingSet,
    test: offline.TrainingSet | None,
    names: Sequence[str],
    kind: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Scores of the model fitted with ``names`` held at their neutral value.

    The same windows, split and seed as the model saved, so the difference
    in scores is what those features add; on ``test`` too, held neutral
    there as well.
    """
    logger.info("train ablation neutral=%s", ",".join(names))
    held = offline.fit(offline.neutralised(training, names), kind, seed)
    scores = dict(held.metadata["scores"])
    if test is not None:
        scores.update(offline.test_scores(held, offline.neutralised(test, names)))
    return {"neutral": list(names), "scores": scores}
