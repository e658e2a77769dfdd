"""The ``dowguard`` command line: run, replay, serve, simulate, bench, ...

Subcommands owned by other packages register themselves through a
``register(subparsers)`` function, imported only when present.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dowguard.config import Settings, load_settings
from dowguard.errors import ConfigError, DowError, ParseError

logger = logging.getLogger(__name__)

#: Where the bundled recording lives (the embedded default of ``run``).
BUNDLED_RECORDING = Path(__file__).resolve().parent.parent / "data" / "recording"

#: Subcommands that live with the package that owns them.
PLUGINS = (
    "api.cli",
    "dowguard.simulate",
    "dowguard.evaluate",
    "dashboards.cli",
    "bench.cli",
    "detector.training",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DowError as exc:
        print(f"dowguard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dowguard",
        description="Denial-of-Wallet guard for serverless platforms.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    parser.add_argument("--config", help="TOML settings file (or DOWGUARD_CONFIG)")
    sub = parser.add_subparsers(metavar="COMMAND")
    _add_run(sub)
    _add_replay(sub)
    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register(sub)
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="SQLAlchemy URL (DOWGUARD_DATABASE_URL)")
    p.add_argument("--window", type=float, help="window length in seconds")
    p.add_argument("--partitions", type=int, help="partitions per topic")
    p.add_argument(
        "--model", help="offline model from `dowguard train` (DOWGUARD_MODEL_PATH)"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object per alert transition"
    )


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="the streaming daemon (or, with no broker, the bundled recording)",
        description=(
            "Consume the invocation, billing and trace topics, detect, store "
            "alerts. With no broker, replay the bundled recording into the "
            "database and print the alerts."
        ),
    )
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers")
    p.add_argument("--group", help="consumer group id")
    p.add_argument(
        "--api",
        action="store_true",
        help="with --kafka: also serve the REST API in this process "
        "(api_host:api_port); /readyz then reports the consumer",
    )
    _add_common(p)
    p.set_defaults(func=cmd_run)


def _add_replay(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="replay recorded files through the detector",
        description=(
            "Read recorded files of any supported format, merged in event-time "
            "order, through the same detector path as the daemon."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--speed", type=float, help="event-time seconds per second (default: max)"
    )
    p.add_argument(
        "--to-kafka", metavar="BOOTSTRAP", help="publish to the topics instead"
    )
    p.add_argument(
        "--no-store", action="store_true", help="do not write to the database"
    )
    _add_common(p)
    p.set_defaults(func=cmd_replay)


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(
        getattr(args, "config", None),
        database_url=getattr(args, "database_url", None),
        window_s=getattr(args, "window", None),
        partitions=getattr(args, "partitions", None),
        model_path=getattr(args, "model", None),
        **extra,
    )


def detector_config(settings: Settings) -> Any:
    from detector.engine import DetectorConfig

    return DetectorConfig(
        window_s=settings.window_s,
        lateness_s=settings.lateness_s,
        partitions=settings.partitions,
        recursion_hops=settings.recursion_hops,
        recursion_max_retries=settings.recursion_max_retries,
        daily_budgets=tuple(sorted(settings.daily_budgets.items())),
        monthly_budgets=tuple(sorted(settings.monthly_budgets.items())),
        online_model=settings.online_model,
        rise_windows=settings.rise_windows,
        rise_ratio=settings.rise_ratio,
        rise_z=settings.rise_z,
        rise_trim=settings.rise_trim,
        rise_min_excess=settings.rise_min_excess,
        rise_false_alert_hours=settings.rise_false_alert_hours,
        ramp_warn_factor=settings.ramp_warn_factor,
        ramp_warn_z=settings.ramp_warn_z,
        ramp_warn_min_excess=settings.ramp_warn_min_excess,
        established_calls=settings.established_calls,
        rule_warmup=settings.rule_warmup,
        burst_margin=settings.burst_margin,
        burst_windows=settings.burst_windows,
        burst_half_life_s=settings.burst_half_life_s,
        burst_cold_windows=settings.burst_cold_windows,
        burst_longest_windows=settings.burst_longest_windows,
    )


def make_engine(settings: Settings) -> Any:
    """The detector the settings ask for, with its offline model if one is set."""
    from detector.engine import Engine

    model = None
    if settings.model_path:
        from models.offline import load

        model = load(settings.model_path)
    return Engine(detector_config(settings), offline_model=model)


def open_store(settings: Settings) -> Any:
    from api.store import SqlStore

    store = SqlStore(settings.database_url)
    store.ensure_schema()
    return store


class _ErrorReport:
    """Reports parse errors on stderr and counts them; replay goes on."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, error: ParseError) -> None:
        self.count += 1
        print(f"dowguard: skipped: {error}", file=sys.stderr)


def _events(paths: Sequence[str], errors: _ErrorReport) -> Iterator[Any]:
    from ingest.parse import read_paths

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise DowError(f"no such file or directory: {', '.join(missing)}")
    yield from read_paths([Path(p) for p in paths], errors)


def _with_progress(events: Iterator[Any]) -> Iterator[Any]:
    if not sys.stderr.isatty():
        return events
    from tqdm import tqdm

    return iter(tqdm(events, unit=" events", file=sys.stderr, mininterval=0.5))


def _printer(as_json: bool) -> Any:
    def show(transition: Any) -> None:
        if as_json:
            sys.stdout.write(json.dumps(transition.to_json()) + "\n")
            return
        data = transition.to_json()
        ctx = transition.context
        where = f"{ctx.account}/{ctx.region}/{ctx.function}:{ctx.qualifier}"
        print(
            f"{data['at']}  {transition.event.upper():8} {transition.severity:8} "
            f"{transition.kind:17} {where}  {transition.summary} "
            f"(cost so far {transition.cost_usd:.4f} USD)"
        )

    return show


def replay_paths(
    settings: Settings,
    paths: Sequence[str],
    as_json: bool,
    speed: float | None = None,
    store: bool = True,
    rehearse: bool = False,
) -> int:
    """Replay files; with ``rehearse``, also show what enforcement would do."""
    from detector.enforcement.rehearsal import Rehearsal
    from detector.replay import Replay

    errors = _ErrorReport()
    engine = make_engine(settings)
    sink = open_store(settings) if store else None
    show = _printer(as_json)
    rehearsal = Rehearsal(settings) if rehearse else None

    def on_transition(transition: Any) -> None:
        show(transition)
        if rehearsal is not None:
            rehearsal.observe(transition)

    replay = Replay(engine, sink, speed=speed, on_transition=on_transition)
    events = _events(paths, errors)
    if rehearsal is not None:
        events = _advancing(events, rehearsal)
    result = replay.run(_with_progress(events))
    opened = sum(1 for t in result.transitions if t.event == "opened")
    print(
        f"dowguard: replayed {result.events} events, {opened} alerts opened, "
        f"{len(result.transitions)} transitions, {errors.count} records skipped"
        + (f"; stored in {settings.database_url}" if store else ""),
        file=sys.stderr,
    )
    if rehearsal is not None:
        _show_actions(rehearsal.actions(), as_json)
    return 0


def _advancing(events: Iterator[Any], rehearsal: Any) -> Iterator[Any]:
    """Pass events on; tick the rehearsal up to the last event time at the end."""
    last: float | None = None
    for event in events:
        last = event.time if last is None else max(last, event.time)
        yield event
    if last is not None:
        rehearsal.advance(last)


def _show_actions(actions: Sequence[Any], as_json: bool) -> None:
    from detector.alerts import rfc3339

    if as_json:
        for rec in actions:
            sys.stdout.write(json.dumps(rec.to_json()) + "\n")
        return
    if not actions:
        print("dry-run enforcement: no action would have been taken")
        return
    print("dry-run enforcement, nothing was touched; it would have taken:")
    for rec in actions:
        ctx = rec.context
        where = f"{ctx.account}/{ctx.region}/{ctx.function}:{ctx.qualifier}"
        why = rec.outcome.get("skipped") or rec.reason
        print(
            f"{rfc3339(rec.created_at)}  {rec.verb.upper():8} {rec.state:9} "
            f"{where}  {why} (alert {rec.fingerprint or 'none'})"
        )


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.to_kafka:
        return publish_paths(settings, args.to_kafka, args.paths)
    return replay_paths(
        settings, args.paths, args.json, speed=args.speed, store=not args.no_store
    )


def publish_paths(settings: Settings, bootstrap: str, paths: Sequence[str]) -> int:
    from ingest.kafka_io import ensure_topics, make_producer, publish_events

    errors = _ErrorReport()
    topics = {
        "invocations": settings.topic_invocations,
        "billing": settings.topic_billing,
        "traces": settings.topic_traces,
    }
    names = [*topics.values(), settings.topic_evidence, settings.topic_deadletter]
    ensure_topics(bootstrap, names, settings.partitions)
    producer = make_producer(bootstrap)
    try:
        count = publish_events(producer, _events(paths, errors), topics)
        producer.flush()
    finally:
        producer.close()
    print(
        f"dowguard: published {count} events to {bootstrap}, "
        f"{errors.count} records skipped",
        file=sys.stderr,
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(
        args, kafka_bootstrap=args.kafka, group_id=getattr(args, "group", None)
    )
    if not settings.kafka_bootstrap:
        if args.api:
            raise ConfigError("run --api serves beside the daemon: give --kafka")
        if not BUNDLED_RECORDING.is_dir():
            raise DowError(f"bundled recording not found at {BUNDLED_RECORDING}")
        print(
            f"dowguard: no broker given; replaying the bundled recording "
            f"{BUNDLED_RECORDING} into {settings.database_url}",
            file=sys.stderr,
        )
        return replay_paths(
            settings, [str(BUNDLED_RECORDING)], args.json, rehearse=True
        )
    return run_daemon(settings, args.json, api=args.api)


#: How far back a critical alert still firing is handed to the enforcer at
#: start: the daemon may have stopped between storing it and acting on it.
#: Older ones are left to people, since the function may have changed since.
CATCH_UP_S = 900.0


def recent_critical_alerts(store: Any, since: float) -> list[Any]:
    """Firing critical alerts updated at or after ``since``, as transitions."""
    from api.store import context_of
    from detector.alerts import CRITICAL, UPDATED, Transition

    found = []
    for view in store.firing_alerts():
        row = view.row
        if row.severity != CRITICAL or row.updated_at < since:
            continue
        evidence = store.get_alert(row.fingerprint).evidence
        found.append(
            Transition(
                UPDATED,
                row.fingerprint,
                row.kind,
                row.severity,
                context_of(row),
                row.starts_at,
                row.updated_at,
                0,
                row.cost_usd,
                str(row.annotations.get("summary", "")),
                evidence,
            )
        )
    return found


def silenced_alerts(store: Any, fingerprints: Sequence[str]) -> set[str]:
    """Which of ``fingerprints`` a silence mutes right now."""
    from api.store import SILENCED

    views = store.alert_views(list(fingerprints))
    return {fp for fp, view in views.items() if view.state == SILENCED}


def run_daemon(settings: Settings, as_json: bool, api: bool = False) -> int:
    """The daemon, with enforcement and Alertmanager forwarding behind it.

    Both are driven by what the daemon has stored, through the hand-offs of
    :class:`~detector.enforcement.handoff.AfterStore`, so neither a hook nor
    Alertmanager can hold up detection or offset commits. With ``api`` the
    REST API is served on a thread of this process, on the same store and
    enforcer, and its /readyz asks the daemon whether its consumer runs.
    """
    from api.alertmanager import build_forwarder
    from api.store import SqlActionLog
    from detector.daemon import Daemon
    from detector.enforcement.handoff import AfterStore
    from detector.enforcement.service import build_enforcer
    from detector.metrics import METRICS
    from ingest.parse import parse_message

    if settings.enforcement_tick_s <= 0:
        raise ConfigError(
            f"enforcement_tick_s must be positive, got {settings.enforcement_tick_s}"
        )
    store = open_store(settings)
    firing = recent_critical_alerts(store, time.time() - CATCH_UP_S)
    enforcer = build_enforcer(settings, SqlActionLog(store))
    forwarder = build_forwarder(settings, store)
    effects = AfterStore(
        store,
        enforcer=enforcer,
        forwarder=forwarder,
        tick_interval_s=settings.enforcement_tick_s,
        silenced=lambda fingerprints: silenced_alerts(store, fingerprints),
        registry=METRICS.registry,
    )
    engine = make_engine(settings)
    daemon = Daemon(settings, engine, effects, parse=parse_message)
    show = _printer(as_json)

    def announce(batch: Sequence[Any]) -> None:
        for transition in batch:
            show(transition)

    daemon.on_transitions = announce

    def stop(signum: int, frame: object) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = _serve_beside(settings, store, enforcer, daemon) if api else None
    effects.start()
    effects.resume(firing)
    if forwarder is not None:
        forwarder.start()
    try:
        daemon.run()
    finally:
        if server is not None:
            server.should_exit = True
        # The daemon has stored its last batch; what it handed on is
        # finished before the store closes.
        effects.close()
        if forwarder is not None:
            forwarder.close()
        store.close()
    return 0


def _serve_beside(settings: Settings, store: Any, enforcer: Any, daemon: Any) -> Any:
    """Start the REST API on a thread of the daemon's process; its server."""
    import threading

    import uvicorn

    from api.app import create_app, set_consumer_running

    # Alerts reach Alertmanager through the daemon's own forwarder.
    app = create_app(settings, store=store, enforcement=enforcer)
    set_consumer_running(app, lambda: bool(daemon.consuming))
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    # Not the main thread, so uvicorn leaves SIGTERM to the daemon.
    thread = threading.Thread(target=server.run, name="dowguard-api", daemon=True)
    thread.start()
    logger.info("api serving host=%s port=%d", settings.api_host, settings.api_port)
    return server


if __name__ == "__main__":
    raise SystemExit(main())
