"""``dowguard bench``: throughput and memory, as ratios against baselines.

Every figure is measured next to its baseline in the same run, so that a
noisy shared machine moves both: replay against merely parsing the same
file (the floor), the daemon against a bare kafka-python consumer reading
the same topic, and the detector's memory per tracked context (fresh, and
after two days of event time).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import workload
from detector.gcpolicy import streaming_gc
from ingest.events import Billing, Context, Event, Invocation, Metric

logger = logging.getLogger(__name__)

# Limitation: replay (.dgr 0.1-0.2) and the daemon (0.25-0.4, idle 0.4-0.7) miss these.
TARGET_REPLAY_RATIO = 0.5
TARGET_DAEMON_RATIO = 0.7
TARGET_BYTES_PER_CONTEXT = 4096
HOUR_S = 3600.0
#: Contexts of the aged memory figure. Fewer than the fresh figure's: aging
#: a context costs a few milliseconds under tracemalloc (its baselines learn
#: two days of idle windows). What is per partition rather than per context
#: is made before the count starts; the cost model's plans, cached for up to
#: 65,536 contexts, are all cached at this count but not at 100,000, so the
#: figure is if anything above what as many aged contexts as that hold.
# Limitation: the aged figure counts 5,000 contexts, not 100,000 (time).
AGED_CONTEXTS = 5_000


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="measure replay, daemon and memory against their baselines",
        description=__doc__,
    )
    p.add_argument("--events", type=int, default=200_000, help="events per run")
    p.add_argument("--contexts", type=int, default=2_000, help="contexts in the run")
    p.add_argument(
        "--memory-contexts", type=int, default=100_000, help="contexts, memory test"
    )
    p.add_argument(
        "--memory-aged-contexts",
        type=int,
        default=AGED_CONTEXTS,
        help="contexts, memory test after 48 hours (at most --memory-contexts)",
    )
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="also bench the daemon")
    p.add_argument("--repeat", type=int, default=3, help="best of N per figure")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_bench)


def _rates(
    runs: dict[str, Callable[[], Callable[[], int]]], repeat: int
) -> dict[str, tuple[float, int, float]]:
    """Best rate of each run over ``repeat`` rounds, the runs interleaved,
    with how many events it saw and its least CPU seconds per event.

    Each run is a set-up that returns the timed function, which returns
    how many events it saw; only the timed function is timed. Rounds
    alternate the runs so that a burst of load from elsewhere on a shared
    machine falls on all of them rather than on one. The CPU time of the
    process moves far less with such load than the clock does.
    """
    best = dict.fromkeys(runs, float("inf"))
    cpu = dict.fromkeys(runs, float("inf"))
    seen = dict.fromkeys(runs, 0)
    for _ in range(repeat):
        for name, setup in runs.items():
            fn = setup()
            # Every run under the collector policy of replay and the daemon,
            # set (and the heap collected) before the clock starts.
            with streaming_gc():
                started = time.perf_counter()
                cpu_started = time.process_time()
                seen[name] = fn()
                cpu_took = time.process_time() - cpu_started
                best[name] = min(best[name], time.perf_counter() - started)
            cpu[name] = min(cpu[name], cpu_took / max(seen[name], 1))
    return {
        name: (
            seen[name] / best[name] if best[name] > 0 else float("inf"),
            seen[name],
            cpu[name],
        )
        for name in runs
    }


def _count(events: Iterable[Any]) -> int:
    return sum(1 for _ in events)


def _engine() -> Any:
    from detector.engine import Engine

    return Engine()


def bench_replay(path: Path, repeat: int) -> dict[str, float]:
    from bench.idle import IdleEngine, idle_figures
    from detector.replay import Replay
    from ingest.parse import read_paths

    def ignore(error: Exception) -> None:
        raise error

    def parse() -> Callable[[], int]:
        return lambda: _count(read_paths([path], ignore))

    def replay_with(make: Callable[[], Any]) -> Callable[[], Callable[[], int]]:
        def setup() -> Callable[[], int]:
            # The engine (and its pricing tables) is built before the clock
            # starts: the floor has no such set-up, and it is not per event.
            engine = make()
            return lambda: Replay(engine).run(read_paths([path], ignore)).events

        return setup

    rates = _rates(
        {
            "parse": parse,
            "replay": replay_with(_engine),
            "idle": replay_with(IdleEngine),
        },
        repeat,
    )
    (parse_rate, n, parse_cpu), (replay_rate, m, replay_cpu) = (
        rates["parse"],
        rates["replay"],
    )
    idle_rate, k, idle_cpu = rates["idle"]
    if not n == m == k:
        raise RuntimeError(f"parse saw {n} events, replay {m}, idle replay {k}")
    return {
        "events": n,
        "parse_events_per_s": round(parse_rate),
        "replay_events_per_s": round(replay_rate),
        "ratio": round(replay_rate / parse_rate, 3),
        "parse_cpu_us_per_event": round(parse_cpu * 1e6, 2),
        "replay_cpu_us_per_event": round(replay_cpu * 1e6, 2),
        "cpu_ratio": round(parse_cpu / replay_cpu, 3) if replay_cpu > 0 else 0.0,
        # The replay path with a detector that does nothing: the most the
        # ratio can be, and what is left of the target for the detector.
        **idle_figures(
            TARGET_REPLAY_RATIO,
            (parse_rate, parse_cpu),
            replay_cpu,
            (idle_rate, idle_cpu),
        ),
    }


#: Hours of event time the aged memory figure's contexts have spanned: the
#: hourly sums keep 48 hours, so 48 hours and a bit fill every one.
AGED_HOURS = 48
#: A workload of the memory bench: the events of the given contexts, from
#: the given time on.
Build = Callable[[list[Context], float], list[Event]]


def _recent(ctxs: list[Context], t0: float) -> list[Event]:
    """What the fresh figure measures: three windows, a metric minute, a bill.

    Every context is seen through its logs, a metric stream and a billing
    row, the worst case for the per-source state; the last two windows are
    still open and the metric minute and the billed period still pending.
    """
    events: list[Event] = []
    for j in range(3):
        events.extend(
            Invocation(ctx, t0 + j * 11.0, f"r{i}-{j}", 80.0, 81.0, 256)
            for i, ctx in enumerate(ctxs)
        )
    for ctx in ctxs:
        events.extend(_metric_minute(ctx, t0, 3.0))
        events.append(Billing(ctx, t0, t0 + HOUR_S, 1e-5, 3.0, "requests", "cur"))
    return events


def _metric_minute(ctx: Context, t: float, calls: float) -> list[Event]:
    return [
        Metric(ctx, t, "AWS/Lambda", name, total, calls, 1.0, 1.0)
        for name, total in (("Invocations", calls), ("Duration", 80.0 * calls))
    ]


def _aged(ctxs: list[Context], t0: float) -> list[Event]:
    """Events that age every context by ``AGED_HOURS`` hours, then the recent.

    A log window and a metric minute at hour 0, another metric minute at
    hour 24, the first day's bill a day late, and the recent events at hour
    ``AGED_HOURS``: the computed and
    the billed hourly sums then span all their hours (and the log counts
    beside the metric stream all their minutes), the baselines have learnt the idle
    windows and minutes between as zeros and are warm, the seasonal profile
    exists and the first bill has been compared. The sizes of all of these
    are fixed from then on, so more events would only cost time.
    """
    day = t0 + 24 * HOUR_S
    events: list[Event] = [
        Invocation(ctx, t0, f"a{i}", 80.0, 81.0, 256) for i, ctx in enumerate(ctxs)
    ]
    for ctx in ctxs:
        events.extend(_metric_minute(ctx, t0, 1.0))
    for ctx in ctxs:
        events.extend(_metric_minute(ctx, day, 1.0))
    events.extend(Billing(ctx, t0, day, 1e-5, 1.0, "requests", "cur") for ctx in ctxs)
    events.extend(_recent(ctxs, t0 + AGED_HOURS * HOUR_S))
    return events


def _partitions(ctxs: list[Context]) -> dict[Context, int]:
    return {ctx: i % 3 for i, ctx in enumerate(ctxs)}


def _feed(engine: Any, events: list[Event], number: dict[Context, int]) -> None:
    for event in events:
        engine.process(event, number[event.context])
    engine.take_transitions()
    engine.take_status()


def _warm_up(engine: Any, build: Build) -> None:
    """Run the same workload for a few contexts of their own, days earlier.

    What is made once per process or partition (modules imported on first
    use, pricing plans, the models' trees once a window is warm) is then
    not counted against the measured contexts, as it is not per context;
    the measured contexts still come later in event time.
    """
    spare = [
        Context("aws", workload.ACCOUNT, workload.REGION, f"w-{i}") for i in range(30)
    ]
    _feed(engine, build(spare, workload.T0 - 4 * 24 * HOUR_S), _partitions(spare))


def bench_memory(n_contexts: int, aged: bool = False) -> dict[str, float]:
    """Detector state per context at ``n_contexts`` tracked contexts.

    Fresh: contexts that have seen three windows. Aged: contexts whose
    state has spanned ``AGED_HOURS`` hours of event time before the same
    three windows, so that every hourly sum is at its full size.
    """
    build: Build = _aged if aged else _recent
    engine = _engine()
    _warm_up(engine, build)
    spare = engine.tracked_contexts
    ctxs = workload.contexts(n_contexts)
    events = build(ctxs, workload.T0)
    # The bench's own map of partitions is made before the count starts.
    number = _partitions(ctxs)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _feed(engine, events, number)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per = (after - before) / n_contexts
    result: dict[str, float] = {
        "contexts": engine.tracked_contexts - spare,
        "bytes_per_context": round(per),
        "ratio_to_target": round(per / TARGET_BYTES_PER_CONTEXT, 3),
    }
    if aged:
        result["hours"] = AGED_HOURS
    return result


def bench_memories(
    n_contexts: int, aged_contexts: int = AGED_CONTEXTS
) -> dict[str, Any]:
    """Both memory figures; the target is checked against the larger one.

    The aged figure also carries the fresh one at its own count of contexts,
    so that what two days add per context reads apart from what the count
    changes (caches of the cost model fill up to a cap, for one).
    """
    fresh = bench_memory(n_contexts)
    count = min(n_contexts, aged_contexts)
    aged = bench_memory(count, aged=True)
    same = fresh if count == n_contexts else bench_memory(count)
    aged["fresh_bytes_per_context"] = same["bytes_per_context"]
    worst = max(fresh["bytes_per_context"], aged["bytes_per_context"])
    return {
        "fresh": fresh,
        "aged": aged,
        "bytes_per_context": worst,
        "target_bytes": TARGET_BYTES_PER_CONTEXT,
        "within_target": worst <= TARGET_BYTES_PER_CONTEXT,
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from ingest.formats.recording import write_recording

    results: dict[str, Any] = {}
    events = workload.workload(args.events, args.contexts)
    with tempfile.TemporaryDirectory(prefix="dowguard-bench-") as tmp:
        own = Path(tmp) / "bench.dgr"
        write_recording(own, events)
        results["replay_own_format"] = bench_replay(own, args.repeat)
        cw = Path(tmp) / "bench-cloudwatch.jsonl.gz"
        invs = [e for e in events if isinstance(e, Invocation)]
        workload.write_cloudwatch(cw, invs)
        results["replay_cloudwatch"] = bench_replay(cw, args.repeat)
        if args.kafka:
            from bench.kafka_bench import bench_daemon

            results["daemon_kafka"] = bench_daemon(args.kafka, events, args.repeat)
    results["memory"] = bench_memories(args.memory_contexts, args.memory_aged_contexts)
    return results


def cmd_bench(args: argparse.Namespace) -> int:
    results = run_bench(args)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    own = results["replay_own_format"]
    cw = results["replay_cloudwatch"]
    mem = results["memory"]
    rows = [
        ("replay, own format (.dgr)", own, TARGET_REPLAY_RATIO),
        ("replay, CloudWatch REPORT payloads", cw, None),
    ]
    print(f"{'what':40} {'events/s':>12} {'floor/s':>12} {'ratio':>7} target")
    for name, row, target in rows:
        tgt = f">= {target}" if target else "-"
        print(
            f"{name:40} {row['replay_events_per_s']:>12,} "
            f"{row['parse_events_per_s']:>12,} {row['ratio']:>7} {tgt}"
        )
        print(
            f"{'  the same, CPU us per event':40} "
            f"{row['replay_cpu_us_per_event']:>12} "
            f"{row['parse_cpu_us_per_event']:>12} {row['cpu_ratio']:>7} -"
        )
        print(
            f"{'  with a detector that does nothing':40} "
            f"{row['idle_events_per_s']:>12,} "
            f"{row['parse_events_per_s']:>12,} {row['idle_ratio']:>7} -"
        )
        print(
            f"{'  detector CPU us per event, its budget':40} "
            f"{row['detector_cpu_us_per_event']:>12} "
            f"{row['detector_budget_cpu_us_per_event']:>12} {'':>7} -"
        )
    if "daemon_kafka" in results:
        d = results["daemon_kafka"]
        print(
            f"{'daemon end to end, Kafka':40} {d['daemon_events_per_s']:>12,} "
            f"{d['bare_consumer_events_per_s']:>12,} {d['ratio']:>7} "
            f">= {TARGET_DAEMON_RATIO}"
        )
        print(
            f"{'  the same, CPU us per event':40} {d['daemon_cpu_us_per_event']:>12} "
            f"{d['bare_consumer_cpu_us_per_event']:>12} {d['cpu_ratio']:>7} -"
        )
        print(
            f"{'  with a detector that does nothing':40} "
            f"{d['idle_events_per_s']:>12,} "
            f"{d['bare_consumer_events_per_s']:>12,} {d['idle_ratio']:>7} -"
        )
        print(
            f"{'  detector CPU us per event, its budget':40} "
            f"{d['detector_cpu_us_per_event']:>12} "
            f"{d['detector_budget_cpu_us_per_event']:>12} {'':>7} -"
        )
    fresh, aged = mem["fresh"], mem["aged"]
    print(
        f"memory: {fresh['bytes_per_context']:,} bytes per context at "
        f"{fresh['contexts']:,} contexts after three windows"
    )
    print(
        f"memory: {aged['bytes_per_context']:,} bytes per context at "
        f"{aged['contexts']:,} contexts after {aged['hours']} hours "
        f"({aged['fresh_bytes_per_context']:,} after three windows)"
    )
    verdict = "met" if mem["within_target"] else "MISSED"
    print(
        f"memory target <= {TARGET_BYTES_PER_CONTEXT:,} bytes per context "
        f"(the larger figure, {mem['bytes_per_context']:,}): {verdict}"
    )
    sys.stdout.flush()
    return 0
