"""Seeded generator of recordings in the formats the platforms themselves write.

The output is what users have (CloudWatch Logs subscription payloads, OTLP/JSON
trace exports, Metric Streams records, CUR 2.0 rows), never dowguard's own
events, plus a labels file with the ground truth of every scenario.
"""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import gzip
import heapq
import io
import logging
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from detector.cost import ARM64, X86_64, Pricing, Rates
from dowguard.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_START = "2026-03-02T09:45:00Z"
DEFAULT_SEED = 1
DEFAULT_MINUTES = 35.0

LOGS_FILE = "logs.jsonl.gz"
TRACES_FILE = "traces.jsonl.gz"
METRICS_FILE = "metrics.jsonl.gz"
CUR_FILE = "cur.csv.gz"
LABELS_FILE = "labels.json"

MAIN_ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
SUBSCRIPTION_FILTER = "dowguard-tap"
METRIC_STREAM = "dowguard-stream"

#: An execution environment idle this long is reclaimed (Lambda keeps idle
#: environments for minutes; the exact figure is not published).
ENV_IDLE_S = 600.0

#: Longest Lambda invocation (the 15-minute timeout).
MAX_DURATION_MS = 900_000.0

SPAN_SERVER, SPAN_CLIENT, SPAN_PRODUCER, SPAN_CONSUMER = 2, 3, 4, 5

#: Lambda's own recursion guard drops the invocation after this many
#: invocations of one function in one event chain.
LAMBDA_LOOP_LIMIT = 16

#: Fewest re-entries of its function that make a labelled loop an attack.
#: A chain that comes back once or twice (A -> B -> A) is what an ordinary
#: fan-out workflow does too; no rule should be scored on calling it a loop.
MIN_LOOP_REENTRIES = 3

_SCOPE_LAMBDA = {
    "name": "opentelemetry.instrumentation.aws_lambda",
    "version": "0.48b0",
}
_SCOPE_BOTOCORE = {
    "name": "opentelemetry.instrumentation.botocore",
    "version": "0.48b0",
}
_RUNTIME_VERSION = "python:3.12.v38"


@dataclass(frozen=True, slots=True)
class Burst:
    """Short bursts on top of a base rate: how a webhook or batch upload looks."""

    rate_per_s: float
    min_s: float
    max_s: float
    gap_min_s: float
    gap_max_s: float


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One simulated function: its configuration, trigger and traffic.

    ``trigger`` is ``http``, ``s3``, ``stream`` or ``timer`` (arrivals made
    here), or ``sqs``, ``sns`` / ``invoke`` (arrivals caused by other
    functions, and for ``sqs`` and ``sns`` with a rate also by producers
    outside the simulation).
    ``duration_ms`` is the median of a log-normal with shape ``sigma``.
    """

    name: str
    trigger: str
    memory_mb: int
    duration_ms: float
    sigma: float = 0.5
    init_ms: float = 300.0
    account: str = MAIN_ACCOUNT
    region: str = "us-east-1"
    arch: str = X86_64
    rate_per_s: float = 0.0
    period_s: float = 0.0
    log_format: str = "text"
    traced: bool = False
    sample: float = 1.0
    queue: str = ""
    sends: tuple[str, ...] = ()
    invokes: tuple[str, ...] = ()
    invoke_p: float = 1.0
    error_rate: float = 0.002
    ephemeral_mb: int = 512
    provisioned: int = 0
    burst: Burst | None = None
    route: str = ""
    app_log_p: float = 0.0
    team: str = "platform"
    #: SNS topic whose messages invoke it (trigger ``sns``).
    topic: str = ""
    #: S3 bucket whose object notifications invoke it (trigger ``s3``).
    bucket: str = ""
    #: SNS topics it publishes to on every call.
    publishes: tuple[str, ...] = ()
    #: Amplitude of the daily cycle of its rate (0: flat), peaking at
    #: ``peak_hour`` UTC; ``weekend`` multiplies the rate on Saturdays and Sundays.
    diurnal: float = 0.0
    peak_hour: float = 14.0
    weekend: float = 1.0
    #: The version its invocations run (a deploy scenario changes it).
    version: str = "$LATEST"
    timeout_ms: float = MAX_DURATION_MS

    def arn(self, qualifier: str = "") -> str:
        base = f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"
        return f"{base}:{qualifier}" if qualifier else base

    def context(self, qualifier: str = "") -> dict[str, str]:
        # Limitation: no aliases; a context's qualifier is $LATEST or a version.
        return {
            "provider": "aws",
            "account": self.account,
            "region": self.region,
            "function": self.name,
            "qualifier": qualifier or self.version,
        }


@dataclass(frozen=True, slots=True)
class LoopScenario:
    """A function that re-sends to the queue it reads from, by a bug.

    The bug is live from ``onset_s`` to ``end_s`` (seconds after the start);
    every invocation in that time sends ``fan_out`` messages back. With
    ``live_s`` it is live only that long from the first invocation that loops.
    """

    function: str = "order-processor"
    queue: str = "orders"
    onset_s: float = 24 * 60.0
    end_s: float = 30 * 60.0
    fan_out: int = 1
    max_hops: int = LAMBDA_LOOP_LIMIT
    #: How the function reaches itself: ``sqs`` (sends to the queue it reads,
    #: trace linked), ``s3`` (writes to the bucket that triggers it; S3
    #: notifications carry no trace context, so the trace breaks) or ``sns``
    #: (publishes to ``queue`` as a topic; through ``members`` it comes back).
    via: str = "sqs"
    #: Other functions of the loop (mutual recursion: A -> B -> A).
    members: tuple[str, ...] = ()
    #: The function itself stops after ``max_hops`` re-sends (an intended,
    #: bounded retry) instead of Lambda's loop guard dropping the event.
    bounded: bool = False
    #: Scenario name in the labels (the bundled recording's loop has none).
    name: str = ""
    level: str = ""
    #: When positive, the bug goes live with the first invocation of
    #: ``function`` that starts at or after ``onset_s`` and stays live for
    #: this many seconds from that start (never past ``end_s``): a loop that
    #: doubles at every hop can only be allowed seconds, and from the onset
    #: they would depend on when the function happens to be called next.
    live_s: float = 0.0


#: Attack and look-alike kinds an :class:`Attack` can be.
FLOOD = "flood"
SLOW_RAMP = "slow_ramp"
FLASH_SALE = "flash_sale"
NIGHTLY_BATCH = "nightly_batch"
DURATION_INFLATION = "duration_inflation"
ERROR_STORM = "error_storm"
DEPLOY = "deploy"
#: Kinds that add invocations on top of the functions' own traffic.
RATE_KINDS = frozenset({FLOOD, SLOW_RAMP, FLASH_SALE, NIGHTLY_BATCH})
BENIGN_KINDS = frozenset({FLASH_SALE, NIGHTLY_BATCH, DEPLOY, "bounded_retry"})


@dataclass(frozen=True, slots=True)
class Attack:
    """Something that changes some functions' traffic from ``onset_s`` to ``end_s``.

    ``multiplier`` is, per kind: the rate factor (``flood``, ``flash_sale``,
    ``nightly_batch``; ``slow_ramp`` reaches it at the end, linearly), the
    duration factor (``duration_inflation`` reaches it half-way and holds;
    ``deploy`` from the onset, with the new ``version``), or the duration
    factor of failed calls (``error_storm``, where ``error_rate`` of the calls
    fail and each failure is redelivered up to ``retries`` times after
    ``retry_delay_s``). Extra invocations are caused by the attack, so their
    whole cost is excess; a longer call's excess is what the longer part cost.
    """

    name: str
    kind: str
    functions: tuple[str, ...]
    onset_s: float
    end_s: float
    multiplier: float = 1.0
    error_rate: float = 0.0
    retries: int = 0
    retry_delay_s: float = 30.0
    version: str = ""
    level: str = ""


@dataclass(frozen=True, slots=True)
class SpikeScenario:
    """A function whose arrival rate is multiplied for a while."""

    function: str = "image-resize"
    onset_s: float = 16 * 60.0
    duration_s: float = 5 * 60.0
    multiplier: float = 25.0


def default_functions() -> tuple[FunctionSpec, ...]:
    """The traffic of the bundled recording: rare functions, a few busy ones.

    checkout-api -> orders -> order-processor -> shipments -> shipping-notifier
    -> (direct invoke) email-sender is a four-function chain that is not a
    loop; webhook-receiver is bursty; the rest run on their own.
    """
    shop = functools.partial(FunctionSpec, team="shop")
    maps = functools.partial(
        FunctionSpec, account=OTHER_ACCOUNT, region="eu-west-1", team="maps"
    )
    return (
        shop(
            name="checkout-api", trigger="http", rate_per_s=0.4,
            memory_mb=512, duration_ms=180.0, sigma=0.45, init_ms=350.0,
            traced=True, sends=("orders",), route="POST /checkout",
            app_log_p=0.2,
        ),
        shop(
            name="order-processor", trigger="sqs", queue="orders",
            memory_mb=1024, duration_ms=250.0, sigma=0.4, init_ms=420.0,
            traced=True, sends=("shipments",),
        ),
        shop(
            name="shipping-notifier", trigger="sqs", queue="shipments",
            memory_mb=256, arch=ARM64, duration_ms=90.0, init_ms=260.0,
            log_format="json", traced=True, invokes=("email-sender",),
            invoke_p=0.6,
        ),
        shop(
            name="email-sender", trigger="invoke",
            memory_mb=256, duration_ms=400.0, sigma=0.6, traced=True,
        ),
        FunctionSpec(
            name="image-resize", trigger="s3", rate_per_s=0.8,
            memory_mb=3008, ephemeral_mb=2048, duration_ms=2500.0, sigma=0.35,
            init_ms=900.0, team="media",
        ),
        FunctionSpec(
            name="auth-authorizer", trigger="http", rate_per_s=2.5,
            memory_mb=128, arch=ARM64, duration_ms=9.0, sigma=0.6, init_ms=180.0,
            route="GET /authorize", error_rate=0.0005,
        ),
        shop(
            name="catalog-api", trigger="http", rate_per_s=1.5,
            memory_mb=256, duration_ms=45.0, sigma=0.7, init_ms=500.0,
            provisioned=4, traced=True, sample=0.05, route="GET /catalog",
        ),
        FunctionSpec(
            name="webhook-receiver", trigger="http", rate_per_s=0.05,
            burst=Burst(15.0, 10.0, 25.0, 240.0, 480.0),
            memory_mb=256, duration_ms=70.0, init_ms=280.0, log_format="json",
            route="POST /hooks", team="integrations",
        ),
        shop(
            name="search-indexer", trigger="stream", rate_per_s=0.3,
            memory_mb=512, arch=ARM64, duration_ms=120.0, init_ms=380.0,
            log_format="json",
        ),
        FunctionSpec(
            name="report-builder", trigger="timer", period_s=300.0,
            memory_mb=3008, ephemeral_mb=4096, duration_ms=35000.0, sigma=0.2,
            init_ms=1200.0, app_log_p=1.0, team="finance",
        ),
        FunctionSpec(
            name="cleanup-cron", trigger="timer", period_s=60.0,
            memory_mb=128, duration_ms=300.0, sigma=0.3, init_ms=200.0,
            app_log_p=1.0,
        ),
        FunctionSpec(
            name="pdf-invoice", trigger="http", rate_per_s=0.03,
            memory_mb=1536, duration_ms=2500.0, init_ms=700.0,
            route="POST /invoice", team="finance",
        ),
        FunctionSpec(
            name="user-signup", trigger="http", rate_per_s=0.01,
            memory_mb=512, duration_ms=320.0, init_ms=400.0, traced=True,
            route="POST /signup", app_log_p=1.0, team="identity",
        ),
        maps(
            name="geo-lookup", trigger="http", rate_per_s=0.8,
            memory_mb=128, arch=ARM64, duration_ms=6.0, init_ms=150.0,
            log_format="json", route="GET /geo",
        ),
        maps(
            name="legacy-etl", trigger="timer", period_s=600.0,
            memory_mb=3008, duration_ms=80000.0, sigma=0.15, init_ms=1500.0,
        ),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a recording depends on: same config, same bytes."""

    seed: int = DEFAULT_SEED
    start: float = datetime.fromisoformat(DEFAULT_START).timestamp()
    minutes: float = DEFAULT_MINUTES
    functions: tuple[FunctionSpec, ...] = field(default_factory=default_functions)
    loop: LoopScenario | None = field(default_factory=LoopScenario)
    spike: SpikeScenario | None = field(default_factory=SpikeScenario)
    #: Further loops and attacks, each labelled under its own name.
    loops: tuple[LoopScenario, ...] = ()
    attacks: tuple[Attack, ...] = ()
    #: Written into labels.json as ``suite`` (which suite, which recording).
    suite: str = ""
    #: Share of log payloads written in the ``{"awslogs": ...}`` wrapper.
    wrapper_share: float = 0.02
    #: Add the forwarder's ``region`` field to decoded log payloads (CloudWatch
    #: does not name the region in a payload; a forwarder knows its own).
    region_field: bool = True
    #: How often AWS/Billing EstimatedCharges is published (AWS: a few
    #: times a day; shorter here so a short recording has several points).
    billing_interval_s: float = 600.0


@dataclass
class Recording:
    """The outputs of one simulation, before they are written to files."""

    log_lines: list[bytes]
    trace_lines: list[bytes]
    metric_lines: list[bytes]
    cur_rows: list[dict[str, str]]
    labels: dict[str, Any]


# --- small helpers ---------------------------------------------------------


def iso(ts: float) -> str:
    """RFC 3339 with milliseconds, as Lambda and CloudWatch print times."""
    moment = datetime.fromtimestamp(round(ts, 3), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_s(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _hex(rng: random.Random, chars: int) -> str:
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def _uuid(rng: random.Random) -> str:
    bits = rng.getrandbits(128)
    # Version 4, RFC 4122 variant, as Lambda request ids are.
    bits = (bits & ~(0xF << 76)) | (4 << 76)
    bits = (bits & ~(0x3 << 62)) | (0x2 << 62)
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _attr(key: str, value: str | int | float | bool) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        # OTLP/JSON writes 64-bit integers as strings.
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _gzip(data: bytes) -> bytes:
    """Gzip with no timestamp or name in the header, so output is reproducible."""
    out = io.BytesIO()
    with gzip.GzipFile(
        filename="", fileobj=out, mode="wb", compresslevel=9, mtime=0
    ) as fh:
        fh.write(data)
    return out.getvalue()


# --- simulation state ------------------------------------------------------


@dataclass(slots=True)
class _Env:
    """One execution environment: its log stream and when it is free."""

    env_id: str
    stream: str
    busy_until: float
    last_used: float
    provisioned: bool = False
    version: str = "$LATEST"


@dataclass(slots=True)
class _Trigger:
    """Why an invocation happens: an arrival, a message or a direct call."""

    kind: str
    queue: str = ""
    trace_id: str = ""
    parent_span: str = ""
    sampled: bool = True
    chain: int = 0
    counts: tuple[tuple[str, int], ...] = ()
    #: The attack that caused this invocation (its cost is all excess).
    attack: str = ""
    attempt: int = 0
    key: str = ""

    def count_of(self, name: str) -> int:
        for fn, n in self.counts:
            if fn == name:
                return n
        return 0

    def counted(self, name: str) -> tuple[tuple[str, int], ...]:
        rest = tuple((fn, n) for fn, n in self.counts if fn != name)
        return (*rest, (name, self.count_of(name) + 1))


@dataclass(slots=True)
class _Call:
    """One invocation as simulated, before it is written in any format."""

    fn: FunctionSpec
    trigger: _Trigger
    env: _Env
    cold: bool
    at: float
    handler_at: float
    end: float
    init_ms: float
    duration_ms: float
    billed_ms: int
    max_memory_mb: int
    failed: bool
    request_id: str
    trace_id: str
    span_id: str
    sampled: bool
    chain: int
    counts: tuple[tuple[str, int], ...]
    #: An attack that changed this call, and what it would have billed without.
    attack: str = ""
    normal_billed_ms: int = -1

    @property
    def spanned(self) -> bool:
        """Whether the call's spans are exported (traced and sampled)."""
        return self.fn.traced and self.sampled


@dataclass(slots=True)
class _Minute:
    invocations: int = 0
    errors: int = 0
    duration_sum: float = 0.0
    duration_min: float = math.inf
    duration_max: float = 0.0
    concurrency: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _FnStats:
    starts: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)


class _Sim:
    """A discrete-event run: arrivals in a heap, effects into the outputs."""

    def __init__(self, config: SimConfig, pricing: Pricing) -> None:
        self.cfg = config
        self.t0 = config.start
        self.t_end = config.start + config.minutes * 60.0
        self.fns = {f.name: f for f in config.functions}
        self.consumers = {f.queue: f.name for f in config.functions if f.queue}
        self.rates: dict[str, Rates] = {
            f.name: pricing.rates("aws", f.region, f.arch) for f in config.functions
        }
        billing = pricing.table("aws").get("billing", {})
        since = str(billing.get("init_billed_since", "2025-08-01T00:00:00Z"))
        self.init_billed_since = datetime.fromisoformat(since).timestamp()
        self.cur_table = pricing.table("aws").get("cur", {})
        self.heap: list[tuple[float, int, str, _Trigger]] = []
        self.seq = 0
        self.envs: dict[str, list[_Env]] = {f.name: [] for f in config.functions}
        self.rngs = {
            f.name: random.Random(f"{config.seed}/{f.name}") for f in config.functions
        }
        # Limitation: one id stream for all; extra calls anywhere shift later trace ids.
        self.ids = random.Random(f"{config.seed}/ids")
        self.log_events: list[tuple[str, str, int, str]] = []
        self.spans: list[tuple[str, str, int, dict[str, Any], dict[str, Any]]] = []
        self.minutes: dict[tuple[str, int], _Minute] = {}
        self.usage: dict[tuple[str, int, str], list[float]] = {}
        self.stats = {f.name: _FnStats() for f in config.functions}
        self.chains: dict[int, list[tuple[float, float, int]]] = {}
        self.next_chain = 1
        self.sqs_requests: dict[tuple[str, str, int, str], int] = {}
        # Every loop, by each function that takes part in it.
        self.loops: dict[str, LoopScenario] = {}
        for loop in (*((config.loop,) if config.loop else ()), *config.loops):
            for name in (loop.function, *loop.members):
                self.loops[name] = loop
        self.chain_loop: dict[int, LoopScenario] = {}
        self.subscribers: dict[str, list[str]] = {}
        self.watchers: dict[str, list[str]] = {}
        for f in config.functions:
            if f.topic:
                self.subscribers.setdefault(f.topic, []).append(f.name)
            if f.bucket:
                self.watchers.setdefault(f.bucket, []).append(f.name)
        # Attacks that change a call (not its arrivals), by function.
        self.effects: dict[str, list[Attack]] = {}
        for attack in config.attacks:
            if attack.kind not in RATE_KINDS:
                for name in attack.functions:
                    self.effects.setdefault(name, []).append(attack)
        self.effect_rng = random.Random(f"{config.seed}/effects")
        #: Excess cost per scenario name and second of event time.
        self.excess: dict[str, dict[int, float]] = {}
        self.stream_version: dict[str, str] = {}
        #: Start times of the invocations each named loop caused.
        self.looped: dict[str, list[float]] = {}
        #: When each loop with a ``live_s`` started looping (handler start).
        self.loop_start: dict[LoopScenario, float] = {}

    # arrivals

    def schedule(self, at: float, name: str, trigger: _Trigger) -> None:
        if at >= self.t_end or name not in self.fns:
            return
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, name, trigger))

    def arrivals(self) -> None:
        for fn in self.cfg.functions:
            rng = random.Random(f"{self.cfg.seed}/{fn.name}/arrivals")
            if fn.trigger == "timer":
                self._timer(fn, rng)
            elif fn.trigger in ("http", "s3", "stream"):
                self._poisson(fn, rng)
            elif fn.rate_per_s > 0 and fn.trigger in ("sqs", "sns"):
                # Messages from producers outside the simulation (untraced).
                self._poisson(fn, rng)
        for attack in self.cfg.attacks:
            if attack.kind in RATE_KINDS:
                for name in attack.functions:
                    self._extra_arrivals(attack, self.fns[name])

    def _timer(self, fn: FunctionSpec, rng: random.Random) -> None:
        at = math.ceil(self.t0 / fn.period_s) * fn.period_s
        while at < self.t_end:
            # EventBridge schedules fire within a second or so of the minute.
            self.schedule(at + rng.uniform(0.05, 1.5), fn.name, _Trigger("timer"))
            at += fn.period_s

    def _rate_at(self, fn: FunctionSpec, t: float) -> float:
        rate = fn.rate_per_s
        if fn.diurnal or fn.weekend != 1.0:
            rate *= _cycle(fn, t)
        spike = self.cfg.spike
        if spike is not None and spike.function == fn.name:
            rel = t - self.t0
            if spike.onset_s <= rel < spike.onset_s + spike.duration_s:
                rate *= spike.multiplier
        return rate

    def _poisson(self, fn: FunctionSpec, rng: random.Random) -> None:
        spike = self.cfg.spike
        peak = fn.rate_per_s * _cycle_peak(fn)
        if spike is not None and spike.function == fn.name:
            peak *= max(1.0, spike.multiplier)
        t = self.t0
        # Thinning: draw at the peak rate, keep each draw in proportion.
        while peak > 0:
            t += rng.expovariate(peak)
            if t >= self.t_end:
                break
            if rng.random() * peak < self._rate_at(fn, t):
                self.schedule(t, fn.name, self._arrival(fn, rng))
        if fn.burst is not None:
            self._bursts(fn, fn.burst, rng)

    def _arrival(
        self, fn: FunctionSpec, rng: random.Random, attack: str = ""
    ) -> _Trigger:
        """The trigger of an arrival from outside the simulated functions."""
        if fn.trigger == "s3" and fn.bucket:
            key = f"uploads/{rng.getrandbits(40):010x}.bin"
            return _Trigger("s3", fn.bucket, attack=attack, key=key)
        source = fn.queue or fn.topic
        return _Trigger(fn.trigger, source, attack=attack)

    def _extra_arrivals(self, attack: Attack, fn: FunctionSpec) -> None:
        """Invocations an attack adds on top of a function's own traffic."""
        rng = random.Random(f"{self.cfg.seed}/{attack.name}/{fn.name}")
        begin = self.t0 + attack.onset_s
        until = min(self.t0 + attack.end_s, self.t_end)
        peak = fn.rate_per_s * _cycle_peak(fn) * max(0.0, attack.multiplier - 1.0)
        t = begin
        while peak > 0:
            t += rng.expovariate(peak)
            if t >= until:
                break
            extra = self._rate_at(fn, t) * (_factor(attack, t - self.t0) - 1.0)
            if rng.random() * peak < extra:
                self.schedule(t, fn.name, self._arrival(fn, rng, attack.name))

    def _bursts(self, fn: FunctionSpec, burst: Burst, rng: random.Random) -> None:
        t = self.t0 + rng.uniform(burst.gap_min_s / 4, burst.gap_max_s / 2)
        while t < self.t_end:
            end = t + rng.uniform(burst.min_s, burst.max_s)
            at = t
            while True:
                at += rng.expovariate(burst.rate_per_s)
                if at >= end:
                    break
                self.schedule(at, fn.name, _Trigger(fn.trigger))
            t = end + rng.uniform(burst.gap_min_s, burst.gap_max_s)

    # the run

    def run(self) -> None:
        for fn in self.cfg.functions:
            for _ in range(fn.provisioned):
                self.envs[fn.name].append(self._new_env(fn, self.t0, True))
        self.arrivals()
        while self.heap:
            at, _, name, trigger = heapq.heappop(self.heap)
            self.invoke(self.fns[name], at, trigger)

    def _new_env(
        self, fn: FunctionSpec, at: float, provisioned: bool, version: str = ""
    ) -> _Env:
        env_id = _hex(self.ids, 32)
        day = datetime.fromtimestamp(at, tz=UTC).strftime("%Y/%m/%d")
        version = version or fn.version
        stream = f"{day}/[{version}]{env_id}"
        if version != "$LATEST":
            self.stream_version[stream] = version
        return _Env(env_id, stream, at, at, provisioned, version)

    def _version(self, fn: FunctionSpec, at: float) -> str:
        for attack in self.effects.get(fn.name, ()):
            if attack.kind == DEPLOY and at >= self.t0 + attack.onset_s:
                return attack.version
        return fn.version

    def _pick_env(self, fn: FunctionSpec, at: float) -> tuple[_Env, bool]:
        envs = self.envs[fn.name]
        envs[:] = [e for e in envs if e.provisioned or at - e.busy_until < ENV_IDLE_S]
        version = self._version(fn, at)
        best: _Env | None = None
        for env in envs:
            if (
                env.busy_until <= at
                and env.version == version
                and (best is None or env.last_used > best.last_used)
            ):
                best = env
        if best is not None:
            return best, False
        env = self._new_env(fn, at, False, version)
        envs.append(env)
        return env, True

    def invoke(self, fn: FunctionSpec, at: float, trigger: _Trigger) -> None:
        counts = trigger.counted(fn.name)
        loop = self.loops.get(fn.name)
        # A bounded loop stops itself; the guard still stands behind it.
        limit = LAMBDA_LOOP_LIMIT if loop is None or loop.bounded else loop.max_hops
        if loop is not None and dict(counts)[fn.name] > limit:
            # Lambda's loop guard drops the event instead of invoking.
            self._minute(fn.name, at).dropped += 1
            return
        call = self._call(fn, at, trigger, counts)
        if fn.name in self.effects:
            self._apply_effects(call)
        spans: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._downstream(call, spans)
        if call.spanned:
            spans.insert(0, (_SCOPE_LAMBDA, _root_span(call)))
            for scope, span in spans:
                self.spans.append(
                    (fn.name, call.env.stream, int(call.end), scope, span)
                )
        if fn.log_format == "json":
            self._json_logs(call)
        else:
            self._text_logs(call)
        cost = self._account(call)
        if call.chain:
            loop = self.chain_loop[call.chain]
            if fn.name == loop.function:
                depth = dict(counts)[fn.name]
                self.chains.setdefault(call.chain, []).append((at, cost, depth))
            if trigger.chain and loop.name:
                self.looped.setdefault(loop.name, []).append(at)
        self._excess(call, cost)
        if call.failed and call.attack:
            self._retry(call)

    def _excess(self, call: _Call, cost: float) -> None:
        """Book what a call cost because of an attack, by scenario and second."""
        # Limitation: what an attacked call causes in other functions is not excess.
        name, extra = call.trigger.attack, cost
        if not name and call.trigger.chain:
            # Every call of a loop's chain after the first is caused by the bug.
            name = self.chain_loop[call.chain].name
        elif not name and call.attack:
            name = call.attack
            normal = call.normal_billed_ms
            extra = cost - self._cost_of(call, normal) if normal >= 0 else 0.0
        if not name or extra <= 0:
            return
        series = self.excess.setdefault(name, {})
        second = int(call.at)
        series[second] = series.get(second, 0.0) + extra

    def _retry(self, call: _Call) -> None:
        attack = next(a for a in self.effects[call.fn.name] if a.name == call.attack)
        trigger = call.trigger
        if attack.kind != ERROR_STORM or trigger.attempt >= attack.retries:
            return
        # The message becomes visible again and is delivered once more.
        again = replace(trigger, attack=attack.name, attempt=trigger.attempt + 1)
        self.schedule(call.end + attack.retry_delay_s, call.fn.name, again)

    def _cost_of(self, call: _Call, billed_ms: int) -> float:
        """What a call of ``billed_ms`` costs (the counterfactual of an attack)."""
        fn, rates = call.fn, self.rates[call.fn.name]
        gb_s = fn.memory_mb * rates.gb_per_mb * billed_ms / 1000.0
        if call.env.provisioned:
            rate = rates.provisioned_duration_usd_per_gb_s
        else:
            rate = rates.tiers[0].usd_per_gb_s
        cost = rates.request_usd + gb_s * rate
        if fn.ephemeral_mb > rates.storage_free_mb:
            extra = (fn.ephemeral_mb - rates.storage_free_mb) * rates.gb_per_mb
            cost += extra * billed_ms / 1000.0 * rates.storage_usd_per_gb_s
        return cost

    def _apply_effects(self, call: _Call) -> None:
        """Change a call as the attacks live at its start make it."""
        rel = call.at - self.t0
        for attack in self.effects[call.fn.name]:
            if not attack.onset_s <= rel < attack.end_s and attack.kind != DEPLOY:
                continue
            if attack.kind == DEPLOY:
                if call.env.version == attack.version:
                    self._stretch(call, attack.multiplier)
            elif attack.kind == DURATION_INFLATION:
                call.attack = attack.name
                call.normal_billed_ms = call.billed_ms
                self._stretch(call, _factor(attack, rel))
            elif attack.kind == ERROR_STORM and (
                call.failed or self.effect_rng.random() < attack.error_rate
            ):
                call.attack = attack.name
                call.normal_billed_ms = call.billed_ms
                call.failed = True
                self._stretch(call, attack.multiplier)

    def _stretch(self, call: _Call, factor: float) -> None:
        duration = min(round(call.duration_ms * factor, 2), call.fn.timeout_ms)
        billed_init = call.init_ms if call.at >= self.init_billed_since else 0.0
        call.duration_ms = duration
        call.billed_ms = math.ceil(duration + billed_init - 1e-9)
        call.end = call.handler_at + duration / 1000.0
        call.env.busy_until = call.env.last_used = call.end

    def _bug_live(self, fn: FunctionSpec, at: float) -> bool:
        """Whether a call of ``fn`` whose handler starts ``at`` runs the bug.

        The first call that asks after a ``live_s`` loop's onset starts it.
        """
        loop = self.loops.get(fn.name)
        if (
            loop is None
            or fn.name != loop.function
            or not loop.onset_s <= at - self.t0 < loop.end_s
        ):
            return False
        if loop.live_s <= 0:
            return True
        start = self.loop_start.setdefault(loop, at)
        # A call whose handler started before the one that started the loop
        # (it arrived later, but ran a shorter cold start) is not looping.
        return start <= at < start + loop.live_s

    def live_window(self, loop: LoopScenario) -> tuple[float, float]:
        """When the bug of ``loop`` was live, in event time."""
        onset, end = self.t0 + loop.onset_s, self.t0 + loop.end_s
        if loop.live_s <= 0:
            return onset, end
        start = self.loop_start.get(loop)
        if start is None:
            # Nothing called the function: the bug never ran.
            return onset, onset
        return start, min(start + loop.live_s, end)

    def _call(
        self,
        fn: FunctionSpec,
        at: float,
        trigger: _Trigger,
        counts: tuple[tuple[str, int], ...],
    ) -> _Call:
        rng = self.rngs[fn.name]
        env, cold = self._pick_env(fn, at)
        init_ms = 0.0
        if cold:
            init_ms = round(rng.lognormvariate(math.log(fn.init_ms), 0.25), 3)
        duration = rng.lognormvariate(math.log(fn.duration_ms), fn.sigma)
        duration = round(min(duration, MAX_DURATION_MS), 2)
        handler_at = at + init_ms / 1000.0
        end = handler_at + duration / 1000.0
        env.busy_until = env.last_used = end
        # Since the date in the pricing table INIT is billed, inside Billed
        # Duration; before it Billed Duration was the handler's time alone.
        billed_init = init_ms if at >= self.init_billed_since else 0.0
        billed = math.ceil(duration + billed_init - 1e-9)
        used = min(fn.memory_mb, int(fn.memory_mb * rng.uniform(0.18, 0.55)) + 40)
        failed = rng.random() < fn.error_rate
        request_id = _uuid(self.ids)
        # A chain keeps its root trace id and the sampling decision made there.
        trace_id, sampled = trigger.trace_id, trigger.sampled
        if fn.traced and not trace_id:
            trace_id = f"{int(at):08x}{_hex(self.ids, 24)}"
            sampled = rng.random() < fn.sample
        span_id = _hex(self.ids, 16) if fn.traced else ""
        chain = trigger.chain
        if not chain and self._bug_live(fn, handler_at):
            chain = self.next_chain
            self.next_chain += 1
            self.chain_loop[chain] = self.loops[fn.name]
        return _Call(
            fn, trigger, env, cold, at, handler_at, end, init_ms, duration, billed,
            used, failed, request_id, trace_id, span_id, sampled, chain, counts,
        )  # fmt: skip

    def _downstream(
        self, call: _Call, spans: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> None:
        fn = call.fn
        rng = self.rngs[fn.name]
        loop = self.loops.get(fn.name)
        queues = list(fn.sends)
        resend = loop is not None and self._bug_live(fn, call.handler_at)
        if resend and loop is not None and loop.bounded:
            resend = dict(call.counts)[fn.name] <= loop.max_hops
        if resend and loop is not None and loop.via == "sqs":
            queues += [loop.queue] * loop.fan_out
        run_s = call.duration_ms / 1000.0
        for queue in queues:
            sent = call.handler_at + run_s * rng.uniform(0.5, 0.9)
            span_id = _hex(self.ids, 16) if fn.traced else ""
            if call.spanned:
                spans.append(
                    (_SCOPE_BOTOCORE, _send_span(call, "sqs", queue, span_id, sent))
                )
            self._sqs(fn, queue, sent)
            consumer = self.consumers.get(queue)
            if consumer is None:
                continue
            # A chain goes on only through the functions of its own loop.
            chain = call.chain if self.loops.get(consumer) is loop else 0
            trigger = _Trigger(
                "sqs", queue, call.trace_id, span_id, call.sampled, chain, call.counts
            )
            # The SQS poller picks a message up after a short, uneven wait.
            # Limitation: batch size 1 (one message per invocation); pollers batch 10.
            self.schedule(sent + rng.uniform(0.2, 0.9), consumer, trigger)
        for name in fn.invokes:
            callee = self.fns.get(name)
            if callee is None or rng.random() >= fn.invoke_p:
                continue
            called = call.handler_at + run_s * rng.uniform(0.3, 0.8)
            span_id = _hex(self.ids, 16) if fn.traced else ""
            if call.spanned:
                spans.append(
                    (_SCOPE_BOTOCORE, _invoke_span(call, callee, span_id, called))
                )
            trigger = _Trigger(
                "invoke", "", call.trace_id, span_id, call.sampled, 0, call.counts
            )
            # An asynchronous invoke waits in Lambda's internal queue briefly.
            self.schedule(called + rng.uniform(0.02, 0.25), name, trigger)
        topics = list(fn.publishes)
        if resend and loop is not None and loop.via == "sns":
            topics += [loop.queue] * loop.fan_out
        for topic in topics:
            self._publish(call, topic, spans)
        if resend and loop is not None and loop.via == "s3":
            for _ in range(loop.fan_out):
                self._put_object(call, loop.queue, spans)

    def _publish(
        self,
        call: _Call,
        topic: str,
        spans: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> None:
        """SNS Publish: the trace header travels with the message."""
        fn, rng = call.fn, self.rngs[call.fn.name]
        sent = call.handler_at + call.duration_ms / 1000.0 * rng.uniform(0.5, 0.9)
        span_id = _hex(self.ids, 16) if fn.traced else ""
        if call.spanned:
            span = _send_span(call, "sns", topic, span_id, sent)
            spans.append((_SCOPE_BOTOCORE, span))
        loop = self.loops.get(fn.name)
        for consumer in self.subscribers.get(topic, ()):
            chain = call.chain if self.loops.get(consumer) is loop else 0
            trigger = _Trigger(
                "sns", topic, call.trace_id, span_id, call.sampled, chain, call.counts
            )
            # SNS pushes to Lambda within a fraction of a second.
            self.schedule(sent + rng.uniform(0.05, 0.4), consumer, trigger)

    def _put_object(
        self,
        call: _Call,
        bucket: str,
        spans: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> None:
        """S3 PutObject: the notification it causes carries no trace context."""
        fn, rng = call.fn, self.rngs[call.fn.name]
        sent = call.handler_at + call.duration_ms / 1000.0 * rng.uniform(0.5, 0.9)
        key = f"processed/{rng.getrandbits(40):010x}.json"
        span_id = _hex(self.ids, 16) if fn.traced else ""
        if call.spanned:
            spans.append((_SCOPE_BOTOCORE, _put_span(call, bucket, key, span_id, sent)))
        loop = self.loops.get(fn.name)
        for consumer in self.watchers.get(bucket, ()):
            chain = call.chain if self.loops.get(consumer) is loop else 0
            # Limitation: one notification per object; S3 may deliver one twice.
            trigger = _Trigger("s3", bucket, chain=chain, counts=call.counts, key=key)
            self.schedule(sent + rng.uniform(0.3, 1.5), consumer, trigger)

    def _sqs(self, fn: FunctionSpec, queue: str, at: float) -> None:
        key = (fn.account, fn.region, int(at // 3600) * 3600, queue)
        self.sqs_requests[key] = self.sqs_requests.get(key, 0) + 1

    # logs

    def _text_logs(self, call: _Call) -> None:
        fn, stream, rid = call.fn, call.env.stream, call.request_id
        out = self.log_events
        if call.cold:
            runtime = zlib.crc32(fn.name.encode())
            arn = f"arn:aws:lambda:{fn.region}::runtime:{runtime:08x}"
            text = f"INIT_START Runtime Version: {_RUNTIME_VERSION}\t"
            out.append(
                (fn.name, stream, _ms(call.at), f"{text}Runtime Version ARN: {arn}\n")
            )
        start = f"START RequestId: {rid} Version: {call.env.version}\n"
        out.append((fn.name, stream, _ms(call.handler_at), start))
        if call.failed or self.rngs[fn.name].random() < fn.app_log_p:
            level, text = (
                ("ERROR", "request failed") if call.failed else ("INFO", "done")
            )
            when = call.handler_at + call.duration_ms / 2000.0
            line = f"[{level}]\t{iso(when)}\t{rid}\t{text}\n"
            out.append((fn.name, stream, _ms(when), line))
        out.append((fn.name, stream, _ms(call.end), f"END RequestId: {rid}\n"))
        report = (
            f"REPORT RequestId: {rid}\tDuration: {call.duration_ms:.2f} ms\t"
            f"Billed Duration: {call.billed_ms} ms\tMemory Size: {fn.memory_mb} MB\t"
            f"Max Memory Used: {call.max_memory_mb} MB\t"
        )
        if call.cold:
            report += f"Init Duration: {call.init_ms:.2f} ms\t"
        if fn.traced:
            tid = call.trace_id
            sampled = "true" if call.sampled else "false"
            report += (
                f"\nXRAY TraceId: 1-{tid[:8]}-{tid[8:]}\tSegmentId: {call.span_id}\t"
                f"Sampled: {sampled}\t"
            )
        out.append((fn.name, stream, _ms(call.end), report + "\n"))

    def _json_logs(self, call: _Call) -> None:
        fn, stream = call.fn, call.env.stream
        # Limitation: no X-Ray Lineage is written; loops show in spans and counts only.
        out = self.log_events
        tracing: dict[str, str] | None = None
        if fn.traced:
            tid = call.trace_id
            tracing = {
                "spanId": call.span_id,
                "type": "X-Amzn-Trace-Id",
                "value": f"Root=1-{tid[:8]}-{tid[8:]};Parent={call.span_id};"
                f"Sampled={1 if call.sampled else 0}",
            }
        if call.cold:
            init = {
                "initializationType": "on-demand",
                "phase": "init",
                "runtimeVersion": _RUNTIME_VERSION,
                "functionName": fn.name,
                "functionVersion": call.env.version,
            }
            line = _platform(call.at, "platform.initStart", init)
            out.append((fn.name, stream, _ms(call.at), line))
        start: dict[str, Any] = {
            "requestId": call.request_id,
            "version": call.env.version,
        }
        if tracing:
            start["tracing"] = tracing
        line = _platform(call.handler_at, "platform.start", start)
        out.append((fn.name, stream, _ms(call.handler_at), line))
        metrics: dict[str, Any] = {
            "durationMs": call.duration_ms,
            "billedDurationMs": call.billed_ms,
            "memorySizeMB": fn.memory_mb,
            "maxMemoryUsedMB": call.max_memory_mb,
        }
        if call.cold:
            metrics["initDurationMs"] = call.init_ms
        report: dict[str, Any] = {"requestId": call.request_id, "metrics": metrics}
        if tracing:
            report["tracing"] = tracing
        report["status"] = "error" if call.failed else "success"
        if call.failed:
            report["errorType"] = "Runtime.HandlerError"
        line = _platform(call.end, "platform.report", report)
        out.append((fn.name, stream, _ms(call.end), line))

    # accounting: metrics, bill, labels

    def _minute(self, name: str, at: float) -> _Minute:
        key = (name, int(at // 60) * 60)
        found = self.minutes.get(key)
        if found is None:
            found = self.minutes[key] = _Minute()
        return found

    def _account(self, call: _Call) -> float:
        """Count the call in its minute's metrics and its hour's bill; its cost."""
        fn, at, billed = call.fn, call.at, call.billed_ms
        minute = self._minute(fn.name, at)
        minute.invocations += 1
        minute.errors += call.failed
        duration = call.duration_ms
        minute.duration_sum += duration
        minute.duration_min = min(minute.duration_min, duration)
        minute.duration_max = max(minute.duration_max, duration)
        busy = sum(1 for e in self.envs[fn.name] if e.busy_until > at)
        minute.concurrency = max(minute.concurrency, busy)

        rates = self.rates[fn.name]
        gb_s = fn.memory_mb * rates.gb_per_mb * billed / 1000.0
        hour = int(at // 3600) * 3600
        cost = rates.request_usd
        self._use(fn.name, hour, "requests", 1.0, rates.request_usd)
        if call.env.provisioned:
            rate = rates.provisioned_duration_usd_per_gb_s
            self._use(fn.name, hour, "provisioned_gb_seconds", gb_s, gb_s * rate)
        else:
            # Simulated volume never leaves the first monthly tier.
            rate = rates.tiers[0].usd_per_gb_s
            self._use(fn.name, hour, "gb_seconds", gb_s, gb_s * rate)
        cost += gb_s * rate
        if fn.ephemeral_mb > rates.storage_free_mb:
            extra = (fn.ephemeral_mb - rates.storage_free_mb) * rates.gb_per_mb
            storage = extra * billed / 1000.0
            self._use(
                fn.name, hour, "storage", storage, storage * rates.storage_usd_per_gb_s
            )
            cost += storage * rates.storage_usd_per_gb_s
        stats = self.stats[fn.name]
        stats.starts.append(at)
        stats.costs.append(cost)
        return cost

    def _use(self, name: str, hour: int, kind: str, amount: float, cost: float) -> None:
        key = (name, hour, kind)
        found = self.usage.get(key)
        if found is None:
            self.usage[key] = [amount, cost]
        else:
            found[0] += amount
            found[1] += cost


def _cycle(fn: FunctionSpec, t: float) -> float:
    """The daily and weekly shape of a function's rate at ``t`` (mean 1)."""
    factor = 1.0
    if fn.diurnal:
        hour = (t % 86400.0) / 3600.0
        factor *= 1.0 + fn.diurnal * math.cos(2 * math.pi * (hour - fn.peak_hour) / 24)
    # 1970-01-01 was a Thursday: day 2 of a week counted from Saturday.
    if fn.weekend != 1.0 and (int(t // 86400.0) + 5) % 7 < 2:
        factor *= fn.weekend
    return factor


def _cycle_peak(fn: FunctionSpec) -> float:
    return (1.0 + abs(fn.diurnal)) * max(1.0, fn.weekend)


def _factor(attack: Attack, rel: float) -> float:
    """An attack's multiplier ``rel`` seconds after the recording's start."""
    span = max(attack.end_s - attack.onset_s, 1e-9)
    done = min(1.0, max(0.0, (rel - attack.onset_s) / span))
    if attack.kind == SLOW_RAMP:
        return 1.0 + (attack.multiplier - 1.0) * done
    if attack.kind == DURATION_INFLATION:
        return 1.0 + (attack.multiplier - 1.0) * min(1.0, 2.0 * done)
    return attack.multiplier


def _ms(ts: float) -> int:
    return round(ts * 1000)


def _platform(ts: float, kind: str, record: dict[str, Any]) -> str:
    return orjson.dumps({"time": iso(ts), "type": kind, "record": record}).decode()


# --- spans -----------------------------------------------------------------


def _nanos(ts: float) -> str:
    # Microseconds first: float seconds carry no honest nanosecond digits.
    return str(round(ts * 1_000_000) * 1000)


def _root_span(call: _Call) -> dict[str, Any]:
    """The invocation's own span: SERVER, or CONSUMER when a queue triggered it."""
    fn, trigger = call.fn, call.trigger
    attrs = [
        _attr("faas.invocation_id", call.request_id),
        _attr("cloud.resource_id", fn.arn(call.env.version)),
        _attr("faas.coldstart", call.cold),
    ]
    links: list[dict[str, Any]] = []
    if trigger.kind in ("sqs", "sns"):
        name, kind = f"{trigger.queue} process", SPAN_CONSUMER
        system = "aws_sqs" if trigger.kind == "sqs" else "aws_sns"
        attrs += [
            _attr("faas.trigger", "pubsub"),
            _attr("messaging.system", system),
            _attr("messaging.operation.type", "process"),
            _attr("messaging.destination.name", trigger.queue),
        ]
        if trigger.parent_span:
            # The message's trace header (AWSTraceHeader on SQS) becomes a
            # link to the sender's span.
            links.append({"traceId": call.trace_id, "spanId": trigger.parent_span})
    elif trigger.kind == "s3" and trigger.queue:
        # What an S3 notification tells the function: bucket, key, event.
        name, kind = f"{trigger.queue} ObjectCreated", SPAN_SERVER
        attrs += [
            _attr("faas.trigger", "datasource"),
            _attr("faas.document.collection", trigger.queue),
            _attr("faas.document.operation", "insert"),
            _attr("faas.document.name", trigger.key),
            _attr("aws.s3.bucket", trigger.queue),
        ]
    elif trigger.kind == "invoke":
        name, kind = fn.name, SPAN_SERVER
        attrs.append(_attr("faas.trigger", "other"))
    else:
        name, kind = fn.route or fn.name, SPAN_SERVER
        method, _, route = (fn.route or "GET /").partition(" ")
        attrs += [
            _attr("faas.trigger", "http"),
            _attr("http.request.method", method),
            _attr("http.route", route),
            _attr("http.response.status_code", 500 if call.failed else 200),
        ]
    span: dict[str, Any] = {
        "traceId": call.trace_id,
        "spanId": call.span_id,
        "parentSpanId": trigger.parent_span,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": _nanos(call.at),
        "endTimeUnixNano": _nanos(call.end),
        "attributes": attrs,
        "status": {"code": 2, "message": "handler error"} if call.failed else {},
    }
    if links:
        span["links"] = links
    return span


def _sdk_span(
    call: _Call,
    span_id: str,
    name: str,
    kind: int,
    at: float,
    seconds: float,
    attributes: list[dict[str, Any]],
) -> dict[str, Any]:
    """A span of one AWS SDK call lasting ``seconds``, child of the invocation."""
    return {
        "traceId": call.trace_id,
        "spanId": span_id,
        "parentSpanId": call.span_id,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": _nanos(at),
        "endTimeUnixNano": _nanos(at + seconds),
        "attributes": attributes,
        "status": {},
    }


def _rpc(service: str, method: str) -> list[dict[str, Any]]:
    return [
        _attr("rpc.system", "aws-api"),
        _attr("rpc.service", service),
        _attr("rpc.method", method),
    ]


#: What a message send looks like in a span, by service: the messaging
#: system and operation, the API call, and how long the call takes (s).
_SENDS = {
    "sqs": ("aws_sqs", "send", "SQS", "SendMessage", 0.012),
    "sns": ("aws_sns", "publish", "SNS", "Publish", 0.02),
}


def _send_span(
    call: _Call, via: str, destination: str, span_id: str, at: float
) -> dict[str, Any]:
    """A PRODUCER span for one SQS SendMessage or SNS Publish (``via``), child
    of the invocation span."""
    system, operation, service, method, took_s = _SENDS[via]
    attributes = [
        _attr("messaging.system", system),
        _attr("messaging.operation.type", operation),
        _attr("messaging.destination.name", destination),
        *_rpc(service, method),
    ]
    name = f"{destination} {operation}"
    return _sdk_span(call, span_id, name, SPAN_PRODUCER, at, took_s, attributes)


def _put_span(
    call: _Call, bucket: str, key: str, span_id: str, at: float
) -> dict[str, Any]:
    """A CLIENT span for one S3 PutObject, child of the invocation span."""
    attributes = [
        *_rpc("S3", "PutObject"),
        _attr("aws.s3.bucket", bucket),
        _attr("aws.s3.key", key),
    ]
    return _sdk_span(call, span_id, "S3.PutObject", SPAN_CLIENT, at, 0.045, attributes)


def _invoke_span(
    call: _Call, callee: FunctionSpec, span_id: str, at: float
) -> dict[str, Any]:
    """A CLIENT span for a direct Lambda Invoke of another function."""
    attributes = [
        *_rpc("Lambda", "Invoke"),
        _attr("faas.invoked_name", callee.name),
        _attr("faas.invoked_provider", "aws"),
        _attr("faas.invoked_region", callee.region),
    ]
    return _sdk_span(call, span_id, "Lambda.Invoke", SPAN_CLIENT, at, 0.03, attributes)


# --- output formats --------------------------------------------------------


def _log_lines(sim: _Sim) -> list[bytes]:
    """CloudWatch subscription payloads: one log stream's events per second."""
    groups: dict[tuple[str, str, int], list[tuple[int, str]]] = {}
    for name, stream, ts, message in sim.log_events:
        groups.setdefault((name, stream, ts // 1000), []).append((ts, message))
    order = sorted(groups, key=lambda k: (k[2], min(groups[k])[0], k[0], k[1]))
    rng = random.Random(f"{sim.cfg.seed}/wrapper")
    lines: list[bytes] = []
    counter = 0
    for key in order:
        name, stream, _ = key
        fn = sim.fns[name]
        events = []
        stream_tag = zlib.crc32(stream.encode())
        for ts, message in sorted(groups[key], key=lambda e: e[0]):
            counter += 1
            # 56 digits like CloudWatch ids: time, stream and a sequence.
            event_id = f"{ts:013d}{stream_tag:010d}{counter:033d}"
            events.append({"id": event_id, "timestamp": ts, "message": message})
        payload: dict[str, Any] = {
            "messageType": "DATA_MESSAGE",
            "owner": fn.account,
            "logGroup": f"/aws/lambda/{name}",
            "logStream": stream,
            "subscriptionFilters": [SUBSCRIPTION_FILTER],
            "logEvents": events,
        }
        if sim.cfg.region_field:
            payload["region"] = fn.region
        raw = orjson.dumps(payload)
        if rng.random() < sim.cfg.wrapper_share:
            data = base64.b64encode(_gzip(raw)).decode()
            raw = orjson.dumps({"awslogs": {"data": data}})
        lines.append(raw)
    return lines


def _resource(fn: FunctionSpec, stream: str, version: str) -> dict[str, Any]:
    return {
        "attributes": [
            _attr("service.name", fn.name),
            _attr("cloud.provider", "aws"),
            _attr("cloud.platform", "aws_lambda"),
            _attr("cloud.region", fn.region),
            _attr("cloud.account.id", fn.account),
            _attr("faas.name", fn.name),
            _attr("faas.version", version),
            _attr("faas.instance", stream),
            _attr("faas.max_memory", fn.memory_mb * 1024 * 1024),
            _attr("telemetry.sdk.language", "python"),
            _attr("telemetry.sdk.name", "opentelemetry"),
            _attr("telemetry.sdk.version", "1.27.0"),
        ]
    }


def _trace_lines(sim: _Sim) -> list[bytes]:
    """OTLP/JSON exports: one per environment and second, as a batch exporter."""
    batches: dict[tuple[str, str, int], list[tuple[dict[str, Any], dict[str, Any]]]]
    batches = {}
    for name, stream, second, scope, span in sim.spans:
        batches.setdefault((name, stream, second), []).append((scope, span))
    lines: list[bytes] = []
    for key in sorted(batches, key=lambda k: (k[2], k[0], k[1])):
        name, stream, _ = key
        scopes: dict[str, dict[str, Any]] = {}
        for scope, span in batches[key]:
            entry = scopes.setdefault(scope["name"], {"scope": scope, "spans": []})
            entry["spans"].append(span)
        export = {
            "resourceSpans": [
                {
                    "resource": _resource(
                        sim.fns[name], stream, sim.stream_version.get(stream, "$LATEST")
                    ),
                    "scopeSpans": list(scopes.values()),
                }
            ]
        }
        lines.append(orjson.dumps(export))
    return lines


def _metric_record(
    fn: FunctionSpec,
    minute: int,
    name: str,
    unit: str,
    stats: tuple[float, float, float, float],
    dimensions: dict[str, str] | None = None,
) -> bytes:
    high, low, total, count = stats
    return orjson.dumps(
        {
            "metric_stream_name": METRIC_STREAM,
            "account_id": fn.account,
            "region": fn.region,
            "namespace": "AWS/Lambda",
            "metric_name": name,
            "dimensions": {"FunctionName": fn.name}
            if dimensions is None
            else dimensions,
            "timestamp": minute * 1000,
            "value": {"max": high, "min": low, "sum": total, "count": count},
            "unit": unit,
        }
    )


def _metric_lines(sim: _Sim) -> list[bytes]:
    """Metric Streams JSON: AWS/Lambda per function and minute, and billing."""
    timed: list[tuple[int, int, bytes]] = []
    by_account: dict[tuple[str, str, int], int] = {}
    order = 0
    for (name, minute), m in sorted(
        sim.minutes.items(), key=lambda i: (i[0][1], i[0][0])
    ):
        fn = sim.fns[name]
        n = float(m.invocations)
        records: list[bytes] = []
        if m.invocations:
            records += [
                _metric_record(fn, minute, "Invocations", "Count", (1.0, 1.0, n, n)),
                _metric_record(
                    fn,
                    minute,
                    "Duration",
                    "Milliseconds",
                    (m.duration_max, m.duration_min, round(m.duration_sum, 2), n),
                ),
                _metric_record(
                    fn,
                    minute,
                    "Errors",
                    "Count",
                    (1.0 if m.errors else 0.0, 0.0, float(m.errors), n),
                ),
                _metric_record(
                    fn,
                    minute,
                    "ConcurrentExecutions",
                    "Count",
                    (
                        float(m.concurrency),
                        float(m.concurrency),
                        float(m.concurrency),
                        1.0,
                    ),
                ),
            ]
        if m.dropped:
            d = float(m.dropped)
            records.append(
                _metric_record(
                    fn, minute, "RecursiveInvocationsDropped", "Count", (1.0, 1.0, d, d)
                )
            )
        key = (fn.account, fn.region, minute)
        by_account[key] = by_account.get(key, 0) + m.concurrency
        for record in records:
            order += 1
            timed.append((minute, order, record))
    # Account-wide aggregates have no FunctionName; Metric Streams send them too.
    # Limitation: their concurrency is the sum of per-function peaks, an upper bound.
    for (account, region, minute), concurrency in sorted(by_account.items()):
        fn = FunctionSpec("", "http", 128, 1.0, account=account, region=region)
        order += 1
        timed.append(
            (
                minute,
                order,
                _metric_record(
                    fn,
                    minute,
                    "ConcurrentExecutions",
                    "Count",
                    (float(concurrency), float(concurrency), float(concurrency), 1.0),
                    {},
                ),
            )
        )
    for at, record in _billing_records(sim):
        order += 1
        timed.append((at, order, record))
    timed.sort()
    return [record for _, _, record in timed]


def _billing_records(sim: _Sim) -> list[tuple[int, bytes]]:
    """AWS/Billing EstimatedCharges: month-to-date totals of the payer account."""
    rng = random.Random(f"{sim.cfg.seed}/billing")
    month = datetime.fromtimestamp(sim.t0, tz=UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    days = (sim.t0 - month.timestamp()) / 86400.0
    # Spend before the recording: a plausible daily rate for the account.
    lambda_before = days * rng.uniform(30.0, 45.0)
    other_before = days * rng.uniform(150.0, 260.0)
    costs = sorted(
        (t, c)
        for s in sim.stats.values()
        for t, c in zip(s.starts, s.costs, strict=True)
    )
    out: list[tuple[int, bytes]] = []
    spent = 0.0
    index = 0
    at = sim.t0
    while at < sim.t_end:
        while index < len(costs) and costs[index][0] < at:
            spent += costs[index][1]
            index += 1
        stamp = int(at // 60) * 60
        other = other_before + (at - sim.t0) / 86400.0 * 200.0
        lam = round(lambda_before + spent, 2)
        for dims, value in (
            ({"Currency": "USD"}, round(lam + other, 2)),
            ({"ServiceName": "AWSLambda", "Currency": "USD"}, lam),
        ):
            record = {
                "metric_stream_name": METRIC_STREAM,
                "account_id": MAIN_ACCOUNT,
                "region": "us-east-1",
                "namespace": "AWS/Billing",
                "metric_name": "EstimatedCharges",
                "dimensions": dims,
                "timestamp": stamp * 1000,
                "value": {"max": value, "min": value, "sum": value, "count": 1.0},
                "unit": "None",
            }
            out.append((stamp, orjson.dumps(record)))
        at += sim.cfg.billing_interval_s
    return out


CUR_COLUMNS = (
    "identity_line_item_id",
    "identity_time_interval",
    "bill_billing_period_start_date",
    "bill_billing_period_end_date",
    "bill_payer_account_id",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_product_code",
    "line_item_usage_type",
    "line_item_operation",
    "line_item_resource_id",
    "line_item_usage_amount",
    "line_item_unblended_rate",
    "line_item_unblended_cost",
    "line_item_currency_code",
    "line_item_line_item_description",
    "pricing_unit",
    "product_region_code",
    "product",
    "resource_tags",
)

_CUR_UNITS = {
    "requests": "Requests",
    "gb_seconds": "Lambda-GB-Second",
    "provisioned": "Lambda-GB-Second",
    "provisioned_gb_seconds": "Lambda-GB-Second",
    "storage": "GB-Seconds",
}


def _num(value: float) -> str:
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text or "0"


def _usage_type(sim: _Sim, fn: FunctionSpec, kind: str) -> str:
    suffixes = sim.cur_table.get("usage_type_suffixes", {})
    suffix = str(suffixes.get(kind, {}).get(fn.arch, kind))
    # us-east-1 rows come without a prefix in many bills; match on the suffix.
    if fn.region == "us-east-1":
        return suffix
    prefix = sim.cur_table.get("region_prefixes", {}).get(fn.region, "")
    return f"{prefix}-{suffix}" if prefix else suffix


def _cur_rows(sim: _Sim) -> list[dict[str, str]]:
    """CUR 2.0 hourly rows of each function and usage type, plus SQS requests."""
    rng = random.Random(f"{sim.cfg.seed}/cur")
    usage = dict(sim.usage)
    for fn in sim.cfg.functions:
        if not fn.provisioned:
            continue
        rates = sim.rates[fn.name]
        hour = int(sim.t0 // 3600) * 3600
        while hour < sim.t_end:
            covered = min(hour + 3600, sim.t_end) - max(hour, sim.t0)
            gb_s = fn.provisioned * fn.memory_mb * rates.gb_per_mb * covered
            cost = gb_s * rates.provisioned_usd_per_gb_s
            usage[(fn.name, hour, "provisioned")] = [gb_s, cost]
            hour += 3600
    month = datetime.fromtimestamp(sim.t0, tz=UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    period_end = _month_after(month)
    rows: list[dict[str, str]] = []
    for (name, hour, kind), (amount, cost) in sorted(
        usage.items(), key=lambda i: (i[0][1], i[0][0], i[0][2])
    ):
        fn = sim.fns[name]
        rate = cost / amount if amount else 0.0
        rows.append(
            {
                "identity_line_item_id": _line_item_id(rng),
                "identity_time_interval": f"{_iso_s(hour)}/{_iso_s(hour + 3600)}",
                "bill_billing_period_start_date": _iso_s(month.timestamp()),
                "bill_billing_period_end_date": _iso_s(period_end),
                "bill_payer_account_id": MAIN_ACCOUNT,
                "line_item_usage_account_id": fn.account,
                "line_item_line_item_type": "Usage",
                "line_item_usage_start_date": _iso_s(hour),
                "line_item_usage_end_date": _iso_s(hour + 3600),
                "line_item_product_code": "AWSLambda",
                "line_item_usage_type": _usage_type(sim, fn, kind),
                "line_item_operation": "Invoke",
                "line_item_resource_id": fn.arn(),
                "line_item_usage_amount": _num(amount),
                "line_item_unblended_rate": _num(rate),
                "line_item_unblended_cost": _num(cost),
                "line_item_currency_code": "USD",
                "line_item_line_item_description": (
                    f"${_num(rate)} per {_CUR_UNITS[kind]}"
                ),
                "pricing_unit": _CUR_UNITS[kind],
                "product_region_code": fn.region,
                "product": orjson.dumps(
                    {"product_name": "AWS Lambda", "region": fn.region}
                ).decode(),
                "resource_tags": orjson.dumps({"user_team": fn.team}).decode(),
            }
        )
    for (account, region, hour, queue), count in sorted(
        sim.sqs_requests.items(), key=lambda i: (i[0][2], i[0][0], i[0][3])
    ):
        # SendMessage and the poller's receive and delete: three requests each.
        amount = count * 3.0
        rows.append(
            {
                "identity_line_item_id": _line_item_id(rng),
                "identity_time_interval": f"{_iso_s(hour)}/{_iso_s(hour + 3600)}",
                "bill_billing_period_start_date": _iso_s(month.timestamp()),
                "bill_billing_period_end_date": _iso_s(period_end),
                "bill_payer_account_id": MAIN_ACCOUNT,
                "line_item_usage_account_id": account,
                "line_item_line_item_type": "Usage",
                "line_item_usage_start_date": _iso_s(hour),
                "line_item_usage_end_date": _iso_s(hour + 3600),
                "line_item_product_code": "AmazonSQS",
                "line_item_usage_type": "Requests-Tier1",
                "line_item_operation": "SendMessage",
                "line_item_resource_id": f"arn:aws:sqs:{region}:{account}:{queue}",
                "line_item_usage_amount": _num(amount),
                "line_item_unblended_rate": "0.0000004",
                "line_item_unblended_cost": _num(amount * 0.0000004),
                "line_item_currency_code": "USD",
                "line_item_line_item_description": (
                    "$0.40 per million Amazon SQS requests"
                ),
                "pricing_unit": "Requests",
                "product_region_code": region,
                "product": orjson.dumps(
                    {"product_name": "Amazon Simple Queue Service", "region": region}
                ).decode(),
                "resource_tags": "{}",
            }
        )
    rows.sort(key=lambda r: r["line_item_usage_start_date"])
    return rows


def _month_after(month: datetime) -> float:
    if month.month == 12:
        return month.replace(year=month.year + 1, month=1).timestamp()
    return month.replace(month=month.month + 1).timestamp()


def _line_item_id(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[rng.getrandbits(5)] for _ in range(52))


def _cur_bytes(rows: Sequence[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CUR_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


# --- ground truth ----------------------------------------------------------


def _rate(starts: Sequence[float], since: float, until: float) -> float:
    if until <= since:
        return 0.0
    return sum(1 for t in starts if since <= t < until) / (until - since)


def _cost_per_hour(
    starts: Sequence[float], costs: Sequence[float], since: float, until: float
) -> float:
    if until <= since:
        return 0.0
    total = sum(c for t, c in zip(starts, costs, strict=True) if since <= t < until)
    return total / (until - since) * 3600.0


def _times(since: float, until: float) -> dict[str, Any]:
    return {
        "onset": round(since, 3),
        "end": round(until, 3),
        "onset_iso": iso(since),
        "end_iso": iso(until),
    }


def _loop_label(sim: _Sim, loop: LoopScenario) -> dict[str, Any]:
    fn = sim.fns[loop.function]
    chains = [c for c in sim.chains.values() if len(c) > 1]
    if not chains:
        bug = sim.t0 + loop.onset_s
        return {
            "kind": "recursive_loop",
            "context": fn.context(),
            **_times(bug, bug),
            "intensity": {"chains": 0},
        }
    # Hop time: from the first call at one depth of a chain to the next depth.
    gaps: list[float] = []
    for chain in chains:
        first: dict[int, float] = {}
        for at, _, depth in chain:
            first.setdefault(depth, at)
        gaps += [first[d + 1] - first[d] for d in sorted(first) if d + 1 in first]
    gaps.sort()
    hops = sorted(max(depth for _, _, depth in chain) for chain in chains)
    looped = [entry for chain in chains for entry in chain if entry[2] > 1]
    dropped = sum(m.dropped for (n, _), m in sim.minutes.items() if n == fn.name)
    onset = min(entry[0] for entry in looped)
    end = max(entry[0] for entry in looped)
    return {
        "kind": "recursive_loop",
        "context": fn.context(),
        **_times(onset, end),
        "bug_live": _times(*sim.live_window(loop)),
        "path": [loop.function, loop.queue, loop.function],
        "intensity": {
            "queue": loop.queue,
            "fan_out": loop.fan_out,
            "chains": len(chains),
            "max_hops": hops[-1],
            "median_hops": hops[len(hops) // 2],
            "lambda_loop_limit": loop.max_hops,
            "hop_interval_s": {
                "min": round(gaps[0], 3),
                "median": round(gaps[len(gaps) // 2], 3),
                "max": round(gaps[-1], 3),
            },
            "looped_invocations": len(looped),
            "dropped_by_lambda": dropped,
            "looped_cost_usd": round(sum(entry[1] for entry in looped), 6),
        },
    }


def _spike_label(sim: _Sim, spike: SpikeScenario) -> dict[str, Any]:
    fn = sim.fns[spike.function]
    stats = sim.stats[fn.name]
    onset = sim.t0 + spike.onset_s
    end = min(onset + spike.duration_s, sim.t_end)
    base_rate = _rate(stats.starts, sim.t0, onset)
    spike_rate = _rate(stats.starts, onset, end)
    base_cost = _cost_per_hour(stats.starts, stats.costs, sim.t0, onset)
    spike_cost = _cost_per_hour(stats.starts, stats.costs, onset, end)
    return {
        "kind": "cost_spike",
        "context": fn.context(),
        **_times(onset, end),
        "intensity": {
            "configured_multiplier": spike.multiplier,
            "rate_multiplier": round(spike_rate / base_rate, 3) if base_rate else None,
            "baseline_per_s": round(base_rate, 4),
            "spike_per_s": round(spike_rate, 4),
            "baseline_usd_per_hour": round(base_cost, 4),
            "spike_usd_per_hour": round(spike_cost, 4),
            "extra_usd_per_hour": round(spike_cost - base_cost, 4),
        },
    }


#: Alert kinds that count as detecting each scenario kind. The detector has
#: cost_spike and recursive_trigger; the others are names of rules to come.
DETECTED_BY: dict[str, tuple[str, ...]] = {
    "recursive_loop": ("recursive_trigger", "cost_spike"),
    "sqs_loop": ("recursive_trigger", "cost_spike"),
    "s3_loop": ("recursive_trigger", "cost_spike"),
    "mutual_loop": ("recursive_trigger", "cost_spike"),
    "cost_spike": ("cost_spike", "anomaly"),
    FLOOD: ("cost_spike", "anomaly"),
    DURATION_INFLATION: ("duration_inflation", "cost_spike", "anomaly"),
    ERROR_STORM: ("error_storm", "cost_spike", "anomaly"),
    SLOW_RAMP: ("slow_ramp", "cost_spike", "anomaly"),
}
_LOOP_KINDS = {"sqs": "sqs_loop", "s3": "s3_loop", "sns": "mutual_loop"}


def loop_kind(loop: LoopScenario) -> str:
    return "bounded_retry" if loop.bounded else _LOOP_KINDS[loop.via]


def _scenario_label(
    sim: _Sim,
    name: str,
    kind: str,
    contexts: Sequence[dict[str, str]],
    since: float,
    until: float,
    level: str,
    intensity: dict[str, Any],
) -> dict[str, Any]:
    """The label fields every named scenario has; ``excess`` is per second."""
    series = sorted(sim.excess.get(name, {}).items())
    names = list(dict.fromkeys(c["function"] for c in contexts))
    before = sum(
        _cost_per_hour(sim.stats[n].starts, sim.stats[n].costs, sim.t0, since)
        for n in names
    )
    during = sum(
        _cost_per_hour(sim.stats[n].starts, sim.stats[n].costs, since, until)
        for n in names
    )
    measured = {
        "baseline_usd_per_hour": round(before, 6),
        "during_usd_per_hour": round(during, 6),
        "cost_multiplier": round(during / before, 3) if before > 0 else None,
    }
    return {
        "name": name,
        "kind": kind,
        "benign": kind in BENIGN_KINDS,
        "level": level,
        "context": dict(contexts[0]),
        "contexts": [dict(c) for c in contexts],
        **_times(since, until),
        "detected_by": list(DETECTED_BY.get(kind, ())),
        "intensity": {**intensity, **measured},
        "excess": {
            "total_usd": round(sum(usd for _, usd in series), 9),
            "per_second": [[second, round(usd, 9)] for second, usd in series],
        },
    }


def _named_loop_label(sim: _Sim, loop: LoopScenario) -> dict[str, Any]:
    fns = [sim.fns[n] for n in (loop.function, *loop.members)]
    chains = [c for key, c in sim.chains.items() if sim.chain_loop[key] is loop and c]
    times = sim.looped.get(loop.name, [])
    bug = sim.t0 + loop.onset_s
    since, until = (min(times), max(times)) if times else (bug, bug)
    hops = sorted(max(depth for _, _, depth in chain) - 1 for chain in chains)
    intensity = {
        "via": loop.via,
        "channel": loop.queue,
        "fan_out": loop.fan_out,
        "bounded": loop.bounded,
        "max_hops_allowed": loop.max_hops,
        "chains": sum(1 for h in hops if h > 0),
        "max_reentries": hops[-1] if hops else 0,
        "looped_invocations": len(times),
        # S3 notifications carry no trace header: each hop starts a new trace.
        "trace_linked": loop.via != "s3",
    }
    label = _scenario_label(
        sim,
        loop.name,
        loop_kind(loop),
        [f.context() for f in fns],
        since,
        until,
        loop.level or f"fan-out {loop.fan_out}",
        intensity,
    )
    label["bug_live"] = _times(*sim.live_window(loop))
    label["path"] = [loop.function, loop.queue, *loop.members, loop.function]
    return label


def _attack_label(sim: _Sim, attack: Attack) -> dict[str, Any]:
    contexts = [sim.fns[n].context() for n in attack.functions]
    if attack.kind == DEPLOY:
        contexts += [sim.fns[n].context(attack.version) for n in attack.functions]
    since = sim.t0 + attack.onset_s
    until = min(sim.t0 + attack.end_s, sim.t_end)
    intensity: dict[str, Any] = {"multiplier": attack.multiplier}
    if attack.kind == ERROR_STORM:
        intensity |= {
            "error_rate": attack.error_rate,
            "retries": attack.retries,
            "retry_delay_s": attack.retry_delay_s,
        }
    if attack.kind == DEPLOY:
        intensity["version"] = attack.version
    level = attack.level or f"{attack.multiplier:g}x"
    return _scenario_label(
        sim, attack.name, attack.kind, contexts, since, until, level, intensity
    )


def _labels(sim: _Sim) -> dict[str, Any]:
    cfg = sim.cfg
    scenarios: list[dict[str, Any]] = []
    if cfg.spike is not None:
        scenarios.append(_spike_label(sim, cfg.spike))
    if cfg.loop is not None:
        scenarios.append(_loop_label(sim, cfg.loop))
    scenarios += [_named_loop_label(sim, loop) for loop in cfg.loops]
    scenarios += [_attack_label(sim, attack) for attack in cfg.attacks]
    targets = {
        c["function"]
        for s in scenarios
        if not s.get("benign")
        for c in s.get("contexts", [s["context"]])
    }
    deployed = {
        n: a.version for a in cfg.attacks if a.kind == DEPLOY for n in a.functions
    }
    functions = []
    for fn in cfg.functions:
        stats = sim.stats[fn.name]
        contexts = [fn.context()]
        if fn.name in deployed:
            contexts.append(fn.context(deployed[fn.name]))
        functions += [
            {
                "context": context,
                "trigger": fn.trigger,
                "memory_mb": fn.memory_mb,
                "architecture": fn.arch,
                "log_format": fn.log_format,
                "traced": fn.traced,
                "provisioned_concurrency": fn.provisioned,
                "ephemeral_storage_mb": fn.ephemeral_mb,
                "bursty": fn.burst is not None,
                "invocations": len(stats.starts),
                "cost_usd": round(sum(stats.costs), 6),
                "expect_alert": fn.name in targets,
            }
            for context in contexts
        ]
    extra = {"suite": cfg.suite} if cfg.suite else {}
    return {
        "generator": "dowguard.simulate",
        "format_version": 1,
        "seed": cfg.seed,
        "start": cfg.start,
        "end": sim.t_end,
        "start_iso": iso(cfg.start),
        "end_iso": iso(sim.t_end),
        "files": {
            "logs": LOGS_FILE,
            "traces": TRACES_FILE,
            "metrics": METRICS_FILE,
            "cur": CUR_FILE,
        },
        "notes": [
            "Times are event times in epoch seconds (UTC).",
            "Decoded log payloads carry a 'region' field added by the forwarder;"
            " CloudWatch itself does not name the region.",
            "Costs are priced from data/pricing at first-tier rates, by billed"
            " duration, with each function's real architecture.",
        ],
        "scenarios": scenarios,
        "functions": functions,
        **extra,
    }


# --- entry points ----------------------------------------------------------


def _check(cfg: SimConfig) -> None:
    names = [f.name for f in cfg.functions]
    if len(set(names)) != len(names):
        raise ConfigError(f"simulate: function names repeat in {names}")
    if cfg.minutes <= 0:
        raise ConfigError(f"simulate: --minutes must be positive, got {cfg.minutes}")
    length = cfg.minutes * 60.0
    for name, onset in (
        ("loop", cfg.loop.onset_s if cfg.loop else None),
        ("spike", cfg.spike.onset_s if cfg.spike else None),
    ):
        if onset is not None and not 0 <= onset < length:
            raise ConfigError(
                f"simulate: {name} onset at {onset:.0f} s is outside the"
                f" {length:.0f} s recording"
            )
    consumers = {f.queue: f.name for f in cfg.functions if f.queue}
    if cfg.loop is not None:
        if consumers.get(cfg.loop.queue) != cfg.loop.function:
            raise ConfigError(
                f"simulate: loop function {cfg.loop.function!r} must read queue"
                f" {cfg.loop.queue!r}"
            )
        if cfg.loop.fan_out < 1:
            raise ConfigError(f"simulate: loop fan_out {cfg.loop.fan_out} below 1")
    _check_scenarios(cfg)
    if cfg.spike is not None:
        spiked = next((f for f in cfg.functions if f.name == cfg.spike.function), None)
        if spiked is None or spiked.trigger not in ("http", "s3", "stream"):
            raise ConfigError(
                f"simulate: spike function {cfg.spike.function!r} must exist and"
                " have arrivals of its own (http, s3 or stream)"
            )


def _check_scenarios(cfg: SimConfig) -> None:
    fns = {f.name: f for f in cfg.functions}
    names = [loop.name for loop in cfg.loops] + [a.name for a in cfg.attacks]
    if len(set(names)) != len(names) or "" in names:
        raise ConfigError(f"simulate: scenario names must be unique and set: {names}")
    known = RATE_KINDS | {DURATION_INFLATION, ERROR_STORM, DEPLOY}
    for attack in cfg.attacks:
        if attack.kind not in known:
            raise ConfigError(
                f"simulate: attack {attack.name!r} has unknown kind {attack.kind!r}"
            )
        missing = [n for n in attack.functions if n not in fns]
        if missing or not attack.functions:
            raise ConfigError(
                f"simulate: attack {attack.name!r} names unknown functions {missing}"
            )
    for loop in cfg.loops:
        if loop.function not in fns or any(m not in fns for m in loop.members):
            raise ConfigError(f"simulate: loop {loop.name!r} names unknown functions")
        readers = {
            "sqs": [f.name for f in cfg.functions if f.queue == loop.queue],
            "s3": [f.name for f in cfg.functions if f.bucket == loop.queue],
            "sns": [f.name for f in cfg.functions if f.topic == loop.queue],
        }.get(loop.via)
        if readers is None:
            raise ConfigError(f"simulate: loop {loop.name!r} via {loop.via!r} unknown")
        if not {loop.function, *loop.members} & set(readers):
            raise ConfigError(
                f"simulate: loop {loop.name!r}: nothing of the loop reads"
                f" {loop.via} {loop.queue!r}"
            )


def loop_reentries(label: dict[str, Any]) -> int | None:
    """How often a loop label's longest chain re-entered its function.

    ``None`` for labels that are no attack loop (bounded retries included).
    """
    intensity = label.get("intensity", {})
    if label.get("kind") == "recursive_loop":
        # The bundled recording's label counts hops with the first call.
        return max(0, int(intensity.get("max_hops", 0)) - 1)
    if label.get("kind") in _LOOP_KINDS.values():
        return int(intensity.get("max_reentries", 0))
    return None


def short_loops(labels: dict[str, Any]) -> list[tuple[str, int]]:
    """(name, re-entries) of labelled loops under :data:`MIN_LOOP_REENTRIES`."""
    out: list[tuple[str, int]] = []
    for label in labels.get("scenarios", ()):
        reentries = loop_reentries(label)
        if reentries is not None and reentries < MIN_LOOP_REENTRIES:
            out.append((str(label.get("name") or label["kind"]), reentries))
    return out


def simulate(
    config: SimConfig | None = None, pricing: Pricing | None = None
) -> Recording:
    """Run one simulation in memory.

    Raises :class:`ConfigError` when a labelled loop re-entered its function
    fewer than :data:`MIN_LOOP_REENTRIES` times: the labels would call an
    attack what is no loop.
    """
    cfg = config or SimConfig()
    _check(cfg)
    sim = _Sim(cfg, pricing or Pricing.load())
    sim.run()
    labels = _labels(sim)
    short = short_loops(labels)
    if short:
        where = f" of suite {cfg.suite!r}" if cfg.suite else ""
        found = ", ".join(f"{name} ({n})" for name, n in short)
        raise ConfigError(
            f"simulate: seed {cfg.seed}{where}: loop scenario(s) re-entered their"
            f" function fewer than {MIN_LOOP_REENTRIES} times: {found};"
            " keep the bug live longer"
        )
    recording = Recording(
        _log_lines(sim),
        _trace_lines(sim),
        _metric_lines(sim),
        _cur_rows(sim),
        labels,
    )
    logger.info(
        "simulated seed=%s minutes=%s payloads=%d exports=%d metrics=%d cur_rows=%d",
        cfg.seed,
        cfg.minutes,
        len(recording.log_lines),
        len(recording.trace_lines),
        len(recording.metric_lines),
        len(recording.cur_rows),
    )
    return recording


def write_recording(recording: Recording, outdir: str | Path) -> dict[str, Path]:
    """Write the files of a recording (gzipped JSON lines, CSV, labels)."""
    folder = Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        LOGS_FILE: _jsonl(recording.log_lines),
        TRACES_FILE: _jsonl(recording.trace_lines),
        METRICS_FILE: _jsonl(recording.metric_lines),
        CUR_FILE: _cur_bytes(recording.cur_rows),
    }
    paths: dict[str, Path] = {}
    for name, data in contents.items():
        paths[name] = folder / name
        paths[name].write_bytes(_gzip(data))
    labels = orjson.dumps(recording.labels, option=orjson.OPT_INDENT_2) + b"\n"
    paths[LABELS_FILE] = folder / LABELS_FILE
    paths[LABELS_FILE].write_bytes(labels)
    return paths


def generate(outdir: str | Path, config: SimConfig | None = None) -> dict[str, Any]:
    """Simulate and write; returns the labels."""
    recording = simulate(config)
    write_recording(recording, outdir)
    return recording.labels


def _jsonl(lines: Sequence[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def parse_start(text: str, command: str = "simulate") -> datetime:
    """The instant of a ``--start`` flag; a time with no zone is UTC."""
    try:
        begin = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{command}: --start {text!r} is not ISO 8601") from exc
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    return begin


def config_for(
    seed: int = DEFAULT_SEED,
    minutes: float = DEFAULT_MINUTES,
    scenarios: Sequence[str] = ("loop", "spike"),
    start: str = DEFAULT_START,
) -> SimConfig:
    """A configuration from the command line's terms."""
    begin = parse_start(start)
    chosen = set(scenarios)
    unknown = chosen - {"loop", "spike", "none"}
    if unknown:
        raise ConfigError(f"simulate: unknown scenario(s) {sorted(unknown)}")
    base = SimConfig(seed=seed, start=begin.timestamp(), minutes=minutes)
    # Scenarios keep their place in the timeline when the length changes.
    scale = minutes / DEFAULT_MINUTES
    loop = spike = None
    if "loop" in chosen and base.loop is not None:
        loop = replace(
            base.loop, onset_s=base.loop.onset_s * scale, end_s=base.loop.end_s * scale
        )
    if "spike" in chosen and base.spike is not None:
        spike = replace(
            base.spike,
            onset_s=base.spike.onset_s * scale,
            duration_s=base.spike.duration_s * scale,
        )
    return replace(base, loop=loop, spike=spike)


def register(subparsers: Any) -> None:
    """Add ``dowguard simulate OUTDIR [--seed] [--minutes] [--scenario ...]``."""
    p = subparsers.add_parser(
        "simulate",
        help="write a synthetic recording in the platforms' own formats",
        description=(
            "Generate CloudWatch Logs payloads, OTLP traces, Metric Streams "
            "records and CUR 2.0 rows for a set of functions, with a recursive "
            "SQS loop and a cost spike, plus labels.json with the ground truth."
        ),
    )
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    p.add_argument(
        "--minutes",
        type=float,
        help=f"event-time length (default {DEFAULT_MINUTES:g}; 50 for --suite"
        " background, which alone takes it)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=("loop", "spike", "none"),
        help="scenario to include (repeatable; default: loop and spike)",
    )
    p.add_argument(
        "--start",
        help=f"start time, ISO 8601, UTC unless it names a zone (default"
        f" {DEFAULT_START}; for a --suite, the suite's own start)",
    )
    p.add_argument(
        "--suite",
        choices=("default", "quick", "background", "attacks"),
        help="write the recordings of an evaluation suite into OUTDIR instead"
        " ('background': the suite's background traffic alone, labelled, in"
        " OUTDIR/background; 'attacks': the default suite with --victims"
        " victims an intensity on 30 background functions)",
    )
    p.add_argument(
        "--victims",
        type=int,
        help="victims of each attack and intensity in --suite attacks (default 10)",
    )
    p.add_argument(
        "--functions",
        type=int,
        help="background functions of a --suite (default 300, 30 for attacks;"
        " a ramps recording gets a fifth)",
    )
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    if getattr(args, "suite", None):
        from dowguard.suite import suite

        recordings = suite(
            args.suite,
            args.seed,
            args.functions,
            args.minutes,
            args.victims,
            start=args.start,
        )
        for item in recordings:
            labels = generate(args.outdir / item.name, item.config)
            print(  # noqa: T201
                f"{item.name}: {len(labels['scenarios'])} scenarios,"
                f" {len(labels['functions'])} functions"
            )
        print(f"wrote {args.outdir}")  # noqa: T201
        return 0
    minutes = DEFAULT_MINUTES if args.minutes is None else args.minutes
    config = config_for(
        args.seed,
        minutes,
        args.scenario or ("loop", "spike"),
        args.start or DEFAULT_START,
    )
    labels = generate(args.outdir, config)
    # The command's user-facing output, as the rest of the CLI prints it.
    for scenario in labels["scenarios"]:
        print(  # noqa: T201
            f"{scenario['kind']}: {scenario['context']['function']} from"
            f" {scenario['onset_iso']} to {scenario['end_iso']}"
        )
    print(f"wrote {args.outdir}")  # noqa: T201
    return 0
