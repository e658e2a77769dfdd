"""The labelled scenario suite: production-shaped background traffic, attacks
at several intensities and benign look-alikes, as simulate configurations.

``dowguard evaluate`` generates these recordings and scores the detector on them.
"""

from __future__ import annotations

import logging
import math
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from detector.cost import ARM64, X86_64
from dowguard.errors import ConfigError
from dowguard.simulate import (
    DEPLOY,
    DURATION_INFLATION,
    ERROR_STORM,
    FLASH_SALE,
    FLOOD,
    NIGHTLY_BATCH,
    SLOW_RAMP,
    Attack,
    Burst,
    FunctionSpec,
    LoopScenario,
    SimConfig,
    parse_start,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

ACCOUNTS = (
    ("210987654321", "us-east-1", 15.0),
    ("321098765432", "eu-west-1", 13.0),
    ("432109876543", "ap-southeast-2", 3.0),
    ("543210987654", "us-west-2", 21.0),
)
VICTIM_ACCOUNT, VICTIM_REGION = "654321098765", "us-east-1"

#: Per-function mean invocation rate: log10 of it is normal. 45 % of the
#: applications in Shahrad et al. (USENIX ATC 2020) run at most once an hour
#: and 81 % at most once a minute, which gives these two figures; 1 % to 99 %
#: of functions then span about eight orders of magnitude of rate.
LOG10_RATE_MEAN = -3.333
LOG10_RATE_SD = 1.772
#: Trigger shares of functions in the same study (HTTP, timer, queue, event,
#: storage); orchestration and others are folded into events here.
TRIGGERS = (("http", 0.55), ("timer", 0.16), ("sqs", 0.15), ("sns", 0.11), ("s3", 0.03))
TIMER_PERIODS_S = ((60, 0.3), (300, 0.25), (600, 0.15), (900, 0.1), (3600, 0.15))
MEMORY_MB = ((128, 30), (256, 22), (512, 18), (1024, 12), (1536, 5), (2048, 5))
MEMORY_MB_LARGE = ((3008, 4), (4096, 2), (10240, 2))


@dataclass(frozen=True, slots=True)
class Background:
    """How many functions of what shape run around the scenarios."""

    functions: int = 300
    #: Hottest mean rate generated, in invocations per second; the published
    #: tail goes two orders of magnitude further.
    # Limitation: rates above rate_cap are cut to it, to keep suites cheap.
    rate_cap: float = 2.0
    seed: int = 1


def _pick(rng: random.Random, table: Sequence[tuple[T, float]]) -> T:
    total = sum(w for _, w in table)
    x = rng.random() * total
    for value, weight in table:
        x -= weight
        if x < 0:
            return value
    return table[-1][0]


def _source(
    trigger: str, name: str, queue: str, topic: str, bucket: str
) -> dict[str, object]:
    """The field that names what triggers ``name``, its name ending as given."""
    if trigger == "sqs":
        return {"queue": f"{name}-{queue}"}
    if trigger == "sns":
        return {"topic": f"{name}-{topic}"}
    if trigger == "s3":
        return {"bucket": f"{name}-{bucket}"}
    return {}


def background_functions(spec: Background) -> tuple[FunctionSpec, ...]:
    """Functions whose rates, triggers, durations and memory follow production.

    Durations are log-normal per call around a median that is itself
    log-normal across functions (most run well under a second, a few for
    minutes); HTTP and event rates follow a daily and a weekly cycle, and one
    HTTP function in ten is bursty.
    """
    rng = random.Random(f"background/{spec.seed}")
    out: list[FunctionSpec] = []
    for i in range(spec.functions):
        account, region, peak = ACCOUNTS[i % len(ACCOUNTS)]
        trigger = _pick(rng, TRIGGERS)
        rate = min(10 ** rng.gauss(LOG10_RATE_MEAN, LOG10_RATE_SD), spec.rate_cap)
        memory = _pick(rng, MEMORY_MB + MEMORY_MB_LARGE)
        median_ms = min(10 ** rng.gauss(math.log10(350.0), 0.6), 120_000.0)
        name = f"app{i // 6:03d}-{trigger}-{i:04d}"
        fields: dict[str, object] = {
            "name": name,
            "trigger": trigger,
            "memory_mb": memory,
            "duration_ms": round(max(median_ms, 2.0), 1),
            "sigma": round(rng.uniform(0.25, 0.9), 2),
            "init_ms": round(rng.uniform(150.0, 1200.0), 0),
            "account": account,
            "region": region,
            "arch": ARM64 if rng.random() < 0.25 else X86_64,
            "log_format": "json" if rng.random() < 0.3 else "text",
            "traced": rng.random() < 0.15,
            "error_rate": round(10 ** rng.uniform(-4, -1.7), 5),
            "team": f"app{i // 6:03d}",
        }
        if trigger == "timer":
            fields["period_s"] = float(_pick(rng, TIMER_PERIODS_S))
        else:
            fields["rate_per_s"] = rate
            fields["diurnal"] = round(rng.uniform(0.2, 0.6), 2)
            # Traffic peaks in the local afternoon of the account's region.
            fields["peak_hour"] = peak
            fields["weekend"] = round(rng.uniform(0.6, 0.95), 2)
        fields.update(_source(trigger, name, "jobs", "events", "uploads"))
        if trigger == "http":
            fields["route"] = f"POST /{name}"
            if rng.random() < 0.1:
                fields["burst"] = Burst(
                    min(8.0, max(0.5, 50.0 * rate)), 5.0, 30.0, 120.0, 1200.0
                )
        out.append(FunctionSpec(**fields))  # type: ignore[arg-type]
    return tuple(out)


def _victim(
    name: str, trigger: str, rate: float, usd_per_call: float, **kw: object
) -> FunctionSpec:
    """A function with a known cost per call: memory fixed, duration fitted."""
    memory = int(kw.pop("memory_mb", 2048))  # type: ignore[call-overload]
    # Duration such that a call costs about usd_per_call at the x86 rate.
    duration = usd_per_call / (0.0000166667 * memory / 1024.0) * 1000.0
    fields: dict[str, object] = {
        "name": name,
        "trigger": trigger,
        "memory_mb": memory,
        "duration_ms": round(duration, 1),
        "sigma": 0.3,
        "init_ms": 400.0,
        "account": VICTIM_ACCOUNT,
        "region": VICTIM_REGION,
        "rate_per_s": rate,
        "team": "victims",
        "error_rate": 0.001,
    }
    fields.update(_source(trigger, name, "q", "topic", "bucket"))
    fields.update(kw)
    return FunctionSpec(**fields)  # type: ignore[arg-type]


#: Two victims per intensity: (rate, USD per call, memory). One's baseline
#: is about $1/h, the other's about $0.15/h, where the detector's minimum
#: excess is felt.
PRICEY = (0.4, 0.0007, 10240)
MODEST = (0.25, 0.00017, 4096)


def _instance(j: int) -> tuple[str, tuple[float, float, int], dict[str, object]]:
    """The tag, the shape and the account of the ``j``-th victim of a kind.

    Victims pair up as in the default suite, one of each shape; a pair past
    the first runs in an account of its own, so that a recording with many
    victims does not crowd one account with them.
    """
    letters = string.ascii_lowercase
    tag = letters[j] if j < 26 else letters[j // 26 - 1] + letters[j % 26]
    where: dict[str, object] = {} if j < 2 else {"account": f"65432109{j // 2:04d}"}
    return tag, (PRICEY, MODEST)[j % 2], where


def _rate_attacks(
    onset: float, end: float, instances: int
) -> tuple[list[FunctionSpec], list[Attack]]:
    fns: list[FunctionSpec] = []
    attacks: list[Attack] = []
    for level in (3, 10, 30):
        for j in range(instances):
            letter, (rate, usd, memory), where = _instance(j)
            tag = f"{level}x-{letter}"
            kw: dict[str, object] = {"memory_mb": memory, **where}
            flood = _victim(f"flood-{tag}", "http", rate, usd, **kw)
            slow = _victim(f"inflate-{tag}", "http", rate, usd, log_format="json", **kw)
            # The timeout bounds inflation: a call can grow to it and no further.
            slow = replace(slow, timeout_ms=slow.duration_ms * level * 1.5)
            storm = _victim(f"storm-{tag}", "sqs", rate, usd, log_format="json", **kw)
            fns += [flood, slow, storm]
            attacks += [
                Attack(f"flood-{tag}", FLOOD, (flood.name,), onset, end, level),
                Attack(
                    f"inflate-{tag}", DURATION_INFLATION, (slow.name,), onset, end,
                    level,
                ),
                _storm(f"storm-{tag}", storm.name, onset, end, level),
            ]  # fmt: skip
    return fns, attacks


def _storm(name: str, fn: str, onset: float, end: float, level: int) -> Attack:
    """Failures that are billed and redelivered: about ``level`` times the cost."""
    # (error rate, redeliveries, duration factor of a failed call)
    rate, retries, factor = {3: (0.9, 2, 1.0), 10: (0.95, 4, 2.5), 30: (1.0, 9, 3.0)}[
        level
    ]
    return Attack(
        name, ERROR_STORM, (fn,), onset, end, factor, error_rate=rate,
        retries=retries, retry_delay_s=20.0, level=f"{level}x",
    )  # fmt: skip


#: How long the bug of a fan-out loop stays live from the invocation that
#: starts looping. A chain's fastest branch takes about 0.6 s a hop through
#: SQS, 0.75 s from A back to A through SNS (two hops) and 0.85 s through S3,
#: whose notifications come 0.3 to 1.5 s after a write. In 1,200 fan-out-2
#: loops (seeds 1 to 200), every branch of the first chain reached the
#: function a third time within 3.7 s, so every branch re-enters at least
#: three times. Doubling for 5 s, a scenario makes 100 (S3) to 330 (SNS,
#: both functions) looped invocations at the median and 1,160 at most;
#: the attacks recording has about 170,000 invocations.
FAN_OUT_LIVE_S = 5.0


def _loops(
    onset: float, end: float, instances: int, live_s: float = FAN_OUT_LIVE_S
) -> tuple[list[FunctionSpec], list[LoopScenario]]:
    fns: list[FunctionSpec] = []
    loops: list[LoopScenario] = []
    for fan_out in (1, 2):
        # Limitation: no concurrency limit is simulated to cap a fan-out loop.
        live = 0.0 if fan_out == 1 else live_s
        rate = 0.1 if fan_out == 1 else 0.5
        for j in range(instances):
            letter, _, where = _instance(j)
            tag = f"f{fan_out}-{letter}"
            # About 300 ms a call: a hop takes about a second.
            sqs = _victim(f"sqsloop-{tag}", "sqs", rate, 0.00001, traced=True, **where)
            s3 = _victim(f"s3loop-{tag}", "s3", rate, 0.00001, traced=True, **where)
            a = _victim(f"mutual-a-{tag}", "sns", rate, 0.00001, traced=True, **where)
            b = _victim(
                f"mutual-b-{tag}", "sns", 0.0, 0.000005, traced=True,
                publishes=(a.topic,), **where,
            )  # fmt: skip
            fns += [sqs, s3, a, b]
            loops += [
                LoopScenario(
                    sqs.name, sqs.queue, onset, end, fan_out,
                    name=f"sqsloop-{tag}", live_s=live,
                ),
                LoopScenario(
                    s3.name, s3.bucket, onset, end, fan_out, via="s3",
                    name=f"s3loop-{tag}", live_s=live,
                ),
                LoopScenario(
                    a.name, b.topic, onset, end, fan_out, via="sns",
                    members=(b.name,), name=f"mutual-{tag}", live_s=live,
                ),
            ]  # fmt: skip
    return fns, loops


def _lookalikes(
    onset: float, end: float, length: float
) -> tuple[list[FunctionSpec], list[LoopScenario], list[Attack]]:
    shop = [
        _victim(f"store-{part}", "http", rate, 0.00012, team="store", diurnal=0.3)
        for part, rate in (
            ("web", 0.8), ("cart", 0.4), ("checkout", 0.2), ("search", 0.6),
            ("pricing", 0.3), ("stock", 0.3),
        )
    ]  # fmt: skip
    batch = _victim("nightly-export", "sqs", 1 / 120.0, 0.0004, memory_mb=3008)
    deploy_a = _victim("api-orders", "http", 0.3, 0.00015, version="7")
    deploy_b = _victim("api-billing", "http", 0.3, 0.00015, version="12")
    retry_2 = _victim("job-poller", "sqs", 0.2, 0.00008, traced=True)
    retry_5 = _victim("status-poller", "sqs", 0.2, 0.00008, traced=True)
    fns = [*shop, batch, deploy_a, deploy_b, retry_2, retry_5]
    attacks = [
        Attack(
            "flash-sale", FLASH_SALE, tuple(f.name for f in shop), onset, end, 5.0
        ),
        Attack("nightly-batch", NIGHTLY_BATCH, (batch.name,), onset, onset + 600, 60),
        Attack("deploy-slower", DEPLOY, (deploy_a.name,), onset, length, 1.6,
               version="8", level="x1.6 duration"),
        Attack("deploy-faster", DEPLOY, (deploy_b.name,), onset, length, 0.5,
               version="13", level="x0.5 duration"),
    ]  # fmt: skip
    loops = [
        LoopScenario(
            fn.name, fn.queue, 0.0, length, 1, max_hops=hops, bounded=True,
            name=f"bounded-retry-{hops}", level=f"N={hops}",
        )
        for fn, hops in ((retry_2, 2), (retry_5, 5))
    ]  # fmt: skip
    return fns, loops, attacks


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording of a suite: its directory name and configuration."""

    name: str
    config: SimConfig


def suite(
    name: str,
    seed: int = 1,
    functions: int | None = None,
    minutes: float | None = None,
    victims: int | None = None,
    start: str | None = None,
) -> list[Recording]:
    """The recordings of a named suite: default, quick, background or attacks.

    Every recording begins at ``start`` (ISO 8601, UTC unless it names a
    zone; default :data:`SUITE_START`). The functions of a seed stay the
    same at any start; what changes is where their day and week stand.

    ``functions`` replaces the number of background functions of the
    attacks recording (the ramps recording has a fifth as many; quick: half).
    ``background`` is one recording of background traffic alone, ``functions``
    functions (default 300) for ``minutes`` (default 50). ``attacks`` is the
    default suite with ``victims`` victims an intensity (default
    :data:`HEAVY_VICTIMS`) on a small background (default
    :data:`HEAVY_BACKGROUND` functions): many scenarios at little cost.
    """
    for flag, value in (("functions", functions), ("victims", victims)):
        if value is not None and value < 1:
            raise ConfigError(f"evaluate: --{flag} must be positive, got {value}")
    if minutes is not None and not minutes > 0:
        raise ConfigError(f"evaluate: --minutes must be positive, got {minutes}")
    if minutes is not None and name != "background":
        raise ConfigError(
            f"evaluate: --minutes is for the background suite only, not {name!r}"
        )
    if victims is not None and name != "attacks":
        raise ConfigError(
            f"evaluate: --victims is for the attacks suite only, not {name!r}"
        )
    if name not in SUITES:
        known = ", ".join(SUITES)
        raise ConfigError(f"evaluate: unknown suite {name!r}; known: {known}")
    # Limitation: a seed's recordings at two starts share their draws (same clumps).
    at = parse_start(start, "evaluate").timestamp() if start is not None else None
    if name == "background":
        config = background_config(
            seed, functions or 300, minutes or 50.0, name, start=at
        )
        return [Recording("background", config)]
    if name == "attacks":
        return _heavy(seed, functions or HEAVY_BACKGROUND, victims or HEAVY_VICTIMS, at)
    return _suite(seed, quick=name == "quick", functions=functions, start=at)


SUITES = ("default", "quick", "background", "attacks")
#: The attacks suite: victims an intensity, and background functions around
#: them (a fifth as many in its ramps recording).
HEAVY_VICTIMS = 10
HEAVY_BACKGROUND = 30

#: A weekday night: the batch job runs at 02:00 UTC.
SUITE_START = "2026-03-04T01:40:00+00:00"


def _begin(start: float | None) -> float:
    """A recording's first instant: ``start``, or else :data:`SUITE_START`."""
    if start is None:
        return datetime.fromisoformat(SUITE_START).timestamp()
    return start


def attacks_config(
    seed: int = 1,
    background: int = 300,
    minutes: float = 50.0,
    onset_s: float = 20 * 60.0,
    end_s: float = 35 * 60.0,
    instances: int = 2,
    suite: str = "",
    start: float | None = None,
) -> SimConfig:
    """Every attack but the slow ramp, and every look-alike, on one background.

    Each scenario has functions of its own, so scenarios that overlap in
    time do not mix in any context. ``start`` is a Unix time (default
    :data:`SUITE_START`), as for every configuration here.
    """
    back = background_functions(Background(background, seed=seed))
    rate_fns, rate_attacks = _rate_attacks(onset_s, end_s, instances)
    loop_fns, loops = _loops(onset_s, end_s, instances)
    look_fns, benign_loops, benign = _lookalikes(onset_s, end_s, minutes * 60.0)
    return SimConfig(
        seed=seed,
        start=_begin(start),
        minutes=minutes,
        functions=(*back, *rate_fns, *loop_fns, *look_fns),
        loop=None,
        spike=None,
        loops=(*loops, *benign_loops),
        attacks=(*rate_attacks, *benign),
        suite=suite,
    )


def background_config(
    seed: int = 1,
    functions: int = 300,
    minutes: float = 50.0,
    suite: str = "",
    start: float | None = None,
) -> SimConfig:
    """The attacks recording's background traffic with no scenario in it.

    The functions are those :func:`attacks_config` draws for the same seed
    and count, so every one of them is background to ``evaluate``: its
    function-hours measure the false-alert rate and nothing else.
    """
    return SimConfig(
        seed=seed,
        start=_begin(start),
        minutes=minutes,
        functions=background_functions(Background(functions, seed=seed)),
        loop=None,
        spike=None,
        suite=suite,
    )


def loops_config(
    seed: int = 1,
    minutes: float = 50.0,
    onset_s: float = 20 * 60.0,
    end_s: float = 35 * 60.0,
    instances: int = 2,
    start: float | None = None,
) -> SimConfig:
    """The attacks recording's loop scenarios alone, with nothing around them.

    Each function draws from a random stream of its own and the loops share
    no function with anything else, so their calls and chains are those of
    :func:`attacks_config` with the same arguments (only ids differ).
    """
    fns, loops = _loops(onset_s, end_s, instances)
    return SimConfig(
        seed=seed,
        start=_begin(start),
        minutes=minutes,
        functions=tuple(fns),
        loop=None,
        spike=None,
        loops=tuple(loops),
    )


def ramps_config(
    seed: int = 1,
    background: int = 60,
    hours: float = 2.5,
    onset_s: float = 1800.0,
    instances: int = 2,
    suite: str = "",
    start: float | None = None,
) -> SimConfig:
    """Slow ramps to 3, 10 and 30 times the cost, over hours, on a background."""
    ramp_fns: list[FunctionSpec] = []
    ramps: list[Attack] = []
    for level in (3, 10, 30):
        for j in range(instances):
            letter, (rate, usd, memory), where = _instance(j)
            tag = f"{level}x-{letter}"
            fn = _victim(
                f"ramp-{tag}", "http", rate / 2, usd * 2, memory_mb=memory, **where
            )
            ramp_fns.append(fn)
            ramps.append(
                Attack(
                    f"ramp-{tag}", SLOW_RAMP, (fn.name,), onset_s, hours * 3600, level
                )
            )
    quiet = background_functions(Background(background, rate_cap=0.5, seed=seed + 1000))
    return SimConfig(
        seed=seed,
        start=_begin(start),
        minutes=hours * 60.0,
        functions=(*quiet, *ramp_fns),
        loop=None,
        spike=None,
        attacks=tuple(ramps),
        suite=suite,
    )


def _heavy(
    seed: int, background: int, victims: int, start: float | None
) -> list[Recording]:
    # Limitation: the attacks suite's background is too small to measure false alerts.
    attacks = attacks_config(
        seed, background, instances=victims, suite="attacks", start=start
    )
    quiet = max(1, background // 5)
    ramps = ramps_config(seed, quiet, instances=victims, suite="attacks", start=start)
    return [Recording("attacks", attacks), Recording("ramps", ramps)]


def _suite(
    seed: int, quick: bool, functions: int | None, start: float | None
) -> list[Recording]:
    name = "quick" if quick else "default"
    count = functions or (60 if quick else 300)
    quiet = max(1, count // (2 if quick else 5))
    if quick:
        attacks = attacks_config(
            seed, count, 40.0, 20 * 60.0, 30 * 60.0, 1, name, start
        )
        # Slow ramps need hours: their own, longer recording with less around.
        ramps = ramps_config(seed, quiet, 1.0, 1800.0, 1, name, start)
    else:
        attacks = attacks_config(seed, count, suite=name, start=start)
        ramps = ramps_config(seed, quiet, suite=name, start=start)
    return [Recording("attacks", attacks), Recording("ramps", ramps)]
