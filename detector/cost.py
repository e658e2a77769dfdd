"""Real-time cost of invocations, spans and metric aggregates, in USD.

Prices are data (one JSON file per provider under data/pricing), read by
:class:`Pricing`; :class:`CostModel` applies them, with the monthly volume
tier in force for each account, region and architecture (:class:`TierTracker`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import orjson

from dowguard.errors import ConfigError
from ingest.events import Context, Invocation, Span

logger = logging.getLogger(__name__)

#: Environment variable naming a directory of pricing tables.
PRICING_DIR_ENV = "DOWGUARD_PRICING_DIR"

AWS_LAMBDA = "aws_lambda"
AZURE_CONSUMPTION = "azure_consumption"
GCP_GEN1 = "gcp_gen1"
MODELS = (AWS_LAMBDA, AZURE_CONSUMPTION, GCP_GEN1)

X86_64 = "x86_64"
ARM64 = "arm64"

#: Region key of the prices that apply wherever no region entry overrides them.
DEFAULT_REGION = "default"

#: Once this many (context, architecture) plans are cached, the cache starts
#: over: plans are cheap to rebuild and the set of contexts is unbounded.
MAX_PLANS = 65536

#: Memory assumed for a span whose resource does not state it (the minimum,
#: so that an estimate from traces never overstates a function's cost).
DEFAULT_SPAN_MEMORY_MB = 128

#: Memory assumed for a function seen only through metrics, whose size is
#: neither configured nor known from an invocation record: Lambda's default
#: size, which is also its minimum, so the estimate errs low.
DEFAULT_METRIC_MEMORY_MB = 128

#: Where the memory of a metric-priced function came from (see memory_for).
MEMORY_CONFIGURED = "config"
MEMORY_LAST_INVOCATION = "last_invocation"
MEMORY_DEFAULT = "default"

_INF = math.inf

UsageKey: TypeAlias = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class Tier:
    """A duration price that holds while monthly GB-s stay below ``up_to_gb_s``."""

    up_to_gb_s: float
    usd_per_gb_s: float


@dataclass(frozen=True, slots=True)
class Rates:
    """The prices of one provider in one region for one architecture."""

    provider: str
    region: str
    architecture: str
    model: str
    request_usd: float
    tiers: tuple[Tier, ...]
    gb_per_mb: float = 1 / 1024
    granularity_ms: float = 1.0
    min_duration_ms: float = 0.0
    memory_min_mb: int = 0
    memory_step_mb: int = 1
    memory_cap_mb: int = 0
    storage_free_mb: int = 0
    storage_usd_per_gb_s: float = 0.0
    provisioned_usd_per_gb_s: float = 0.0
    provisioned_duration_usd_per_gb_s: float = 0.0
    usd_per_ghz_s: float = 0.0
    cpu_ghz: tuple[tuple[int, float], ...] = ()

    def billed_ms(self, duration_ms: float) -> float:
        """Duration rounded up to the billing granularity, at least the minimum."""
        step = self.granularity_ms
        billed = math.ceil(duration_ms / step - 1e-9) * step if duration_ms > 0 else 0
        return max(float(billed), self.min_duration_ms)

    def billed_memory_mb(self, memory_mb: int) -> int:
        """Memory as charged: at least the minimum, in steps, under the cap."""
        step = self.memory_step_mb
        billed = max(memory_mb, self.memory_min_mb)
        billed = -(-billed // step) * step
        if self.memory_cap_mb:
            billed = min(billed, self.memory_cap_mb)
        return billed

    def ghz(self, memory_mb: int) -> float:
        """CPU clock that comes with a memory size (providers that charge it)."""
        for up_to, ghz in self.cpu_ghz:
            if memory_mb <= up_to:
                return ghz
        return self.cpu_ghz[-1][1] if self.cpu_ghz else 0.0

    def tier_rate(self, gb_s: float) -> float:
        """Duration price once ``gb_s`` GB-s have been used this month."""
        for tier in self.tiers:
            if gb_s < tier.up_to_gb_s:
                return tier.usd_per_gb_s
        return self.tiers[-1].usd_per_gb_s


class Pricing:
    """Pricing tables of every provider, as read from data/pricing."""

    def __init__(
        self, tables: Mapping[str, Mapping[str, Any]], source: str = "<memory>"
    ) -> None:
        self.source = source
        self._tables: dict[str, Mapping[str, Any]] = {}
        for name, table in tables.items():
            _validate(table, f"{source}/{name}")
            self._tables[str(table["provider"])] = table
        self._rates: dict[tuple[str, str, str], Rates] = {}
        self._model: CostModel | None = None

    @classmethod
    def load(cls, dir: str | Path | None = None) -> Pricing:
        """Read every ``*.json`` table of ``dir`` (found if not given)."""
        folder = Path(dir) if dir is not None else find_pricing_dir()
        files = sorted(folder.glob("*.json"))
        if not files:
            raise ConfigError(f"pricing directory {folder}: no *.json tables")
        tables: dict[str, Mapping[str, Any]] = {}
        for path in files:
            try:
                tables[path.name] = orjson.loads(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"pricing table {path}: {exc.strerror}") from exc
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"pricing table {path}: invalid JSON: {exc}") from exc
        return cls(tables, source=str(folder))

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted(self._tables))

    def table(self, provider: str) -> Mapping[str, Any]:
        """The raw table of a provider (free tier, CUR usage types, sources)."""
        try:
            return self._tables[provider]
        except KeyError:
            raise ConfigError(
                f"pricing {self.source}: no table for provider {provider!r}"
                f" (have {', '.join(self.providers)})"
            ) from None

    @property
    def model(self) -> CostModel:
        """A cost model on these tables, with its own tier state (built once)."""
        if self._model is None:
            self._model = CostModel(self)
        return self._model

    # The pricing functions are the model's bound methods, so that a caller
    # holding ``pricing.invocation_cost`` pays no extra call per event.

    @property
    def invocation_cost(self) -> Callable[[Invocation], float]:
        return self.model.invocation_cost

    @property
    def span_cost(self) -> Callable[[Span], float]:
        return self.model.span_cost

    @property
    def metric_cost(self) -> Callable[..., float]:
        return self.model.metric_cost

    def rates(self, provider: str, region: str, architecture: str = X86_64) -> Rates:
        """Prices in force for a provider, region and architecture."""
        key = (provider, region, architecture)
        found = self._rates.get(key)
        if found is None:
            found = self._rates[key] = self._build(provider, region, architecture)
        return found

    def _build(self, provider: str, region: str, architecture: str) -> Rates:
        table = self.table(provider)
        regions = table["regions"]
        base = regions[DEFAULT_REGION]
        local = regions.get(region, {})

        def pick(name: str, default: Any = None) -> Any:
            return local.get(name, base.get(name, default))

        tiers_by_arch = {**base["duration_tiers"], **local.get("duration_tiers", {})}
        # Providers without a separate arm64 price bill every architecture alike.
        arch = architecture if architecture in tiers_by_arch else X86_64
        tiers = tuple(
            Tier(
                _INF if t["up_to_gb_s"] is None else float(t["up_to_gb_s"]),
                float(t["usd_per_gb_s"]),
            )
            for t in tiers_by_arch[arch]
        )
        billing = table.get("billing", {})
        memory = billing.get("memory_mb", {})
        storage = pick("ephemeral_storage", {})
        provisioned = pick("provisioned", {}).get(arch, {})
        cpu = tuple(
            (int(row["up_to_mb"]), float(row["ghz"]))
            for row in billing.get("cpu_ghz_by_memory_mb", ())
        )
        return Rates(
            provider=provider,
            region=region,
            architecture=arch,
            model=str(table["model"]),
            request_usd=float(pick("request_usd")),
            tiers=tiers,
            gb_per_mb=float(billing.get("gb_per_mb", 1 / 1024)),
            granularity_ms=float(billing.get("duration_granularity_ms", 1)),
            min_duration_ms=float(billing.get("min_duration_ms", 0)),
            memory_min_mb=int(memory.get("min", 0)),
            memory_step_mb=int(memory.get("step", 1)),
            memory_cap_mb=int(memory.get("cap", 0)),
            storage_free_mb=int(storage.get("free_mb", 0)),
            storage_usd_per_gb_s=float(storage.get("usd_per_gb_s", 0.0)),
            provisioned_usd_per_gb_s=float(
                provisioned.get("concurrency_usd_per_gb_s", 0.0)
            ),
            provisioned_duration_usd_per_gb_s=float(
                provisioned.get("duration_usd_per_gb_s", 0.0)
            ),
            usd_per_ghz_s=float(pick("usd_per_ghz_s", 0.0)),
            cpu_ghz=cpu,
        )


def find_pricing_dir() -> Path:
    """The pricing tables: ``$DOWGUARD_PRICING_DIR``, else data/pricing of the repo."""
    env = os.environ.get(PRICING_DIR_ENV)
    if env:
        return Path(env)
    # Limitation: a wheel does not ship data/pricing; outside a checkout set the env.
    here = Path(__file__).resolve().parent.parent / "data" / "pricing"
    if not here.is_dir():
        raise ConfigError(
            f"pricing tables not found at {here}; set {PRICING_DIR_ENV} to their"
            " directory"
        )
    return here


def _validate(table: Mapping[str, Any], where: str) -> None:
    """Check the shape of one table, naming the file and field that is wrong."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"pricing table {where}: must be a JSON object")
    for name in ("provider", "model", "regions"):
        if name not in table:
            raise ConfigError(f"pricing table {where}: missing field {name!r}")
    if table["model"] not in MODELS:
        raise ConfigError(
            f"pricing table {where}: model {table['model']!r} is not one of {MODELS}"
        )
    base = table["regions"].get(DEFAULT_REGION)
    if not isinstance(base, Mapping):
        raise ConfigError(f"pricing table {where}: regions.{DEFAULT_REGION} missing")
    if not isinstance(base.get("request_usd"), (int, float)):
        raise ConfigError(
            f"pricing table {where}: regions.{DEFAULT_REGION}.request_usd"
            " must be a number"
        )
    for region, entry in table["regions"].items():
        for arch, tiers in entry.get("duration_tiers", {}).items():
            _validate_tiers(tiers, f"{where}: regions.{region}.duration_tiers.{arch}")
    if X86_64 not in base.get("duration_tiers", {}):
        raise ConfigError(
            f"pricing table {where}: regions.{DEFAULT_REGION}.duration_tiers"
            f" needs {X86_64!r}"
        )


def _validate_tiers(tiers: Any, where: str) -> None:
    if not isinstance(tiers, list) or not tiers:
        raise ConfigError(f"pricing table {where}: must be a non-empty list")
    last = 0.0
    for i, tier in enumerate(tiers):
        up_to = tier.get("up_to_gb_s") if isinstance(tier, Mapping) else None
        rate = tier.get("usd_per_gb_s") if isinstance(tier, Mapping) else None
        if not isinstance(rate, (int, float)) or rate < 0:
            raise ConfigError(f"pricing table {where}[{i}]: bad usd_per_gb_s {rate!r}")
        bound = _INF if up_to is None else up_to
        if not isinstance(bound, (int, float)) or bound <= last:
            raise ConfigError(
                f"pricing table {where}[{i}]: up_to_gb_s {up_to!r} must grow"
            )
        last = bound
    if last != _INF:
        raise ConfigError(f"pricing table {where}: last tier needs up_to_gb_s null")


#: The month :func:`month_bounds` found last: every new context asks for it,
#: and nearly always for the same month.
_last_month: tuple[float, float] = (_INF, -_INF)


def month_bounds(time: float) -> tuple[float, float]:
    """Epoch seconds of the start of the UTC month holding ``time``, and of the next."""
    global _last_month
    known = _last_month
    if known[0] <= time < known[1]:
        return known
    moment = datetime.fromtimestamp(time, tz=UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        end = start.replace(year=start.year + 1, month=1)
    else:
        end = start.replace(month=start.month + 1)
    _last_month = known = (start.timestamp(), end.timestamp())
    return known


@dataclass(slots=True)
class Usage:
    """Month-to-date GB-s of one account, region and architecture."""

    tiers: tuple[Tier, ...]
    month_start: float = -_INF
    month_end: float = -_INF
    gb_s: float = 0.0
    index: int = 0
    rate: float = 0.0
    tier_end: float = _INF

    def set_gb_s(self, gb_s: float) -> None:
        self.gb_s = gb_s
        index = 0
        while gb_s >= self.tiers[index].up_to_gb_s and index < len(self.tiers) - 1:
            index += 1
        self.index = index
        self.rate = self.tiers[index].usd_per_gb_s
        self.tier_end = self.tiers[index].up_to_gb_s


class TierTracker:
    """Monthly GB-s per (provider, account, region, architecture).

    Volume tiers apply to the month's aggregate duration, so the rate of an
    invocation depends on what came before it in the month. The month is
    the UTC calendar month of event time; the first event of a new month
    starts the count again. A tracker starts from zero unless seeded (for
    instance from the month-to-date usage of the bill).
    """

    # Limitation: usage is not checkpointed; after a restart it counts from 0 again.

    def __init__(self) -> None:
        self._usage: dict[UsageKey, Usage] = {}

    def __len__(self) -> int:
        return len(self._usage)

    def usage(self, key: UsageKey, tiers: tuple[Tier, ...], time: float) -> Usage:
        """The running usage of ``key``, created at the start of ``time``'s month."""
        found = self._usage.get(key)
        if found is None:
            found = self._usage[key] = Usage(tiers)
            self._roll(found, time)
        return found

    def seed(
        self, key: UsageKey, tiers: tuple[Tier, ...], gb_s: float, time: float
    ) -> None:
        """Start from a known month-to-date usage (e.g. from the bill)."""
        usage = self.usage(key, tiers, time)
        self._roll(usage, time)
        usage.set_gb_s(gb_s)

    def month_to_date(self, key: UsageKey) -> float:
        found = self._usage.get(key)
        return found.gb_s if found is not None else 0.0

    def charge(self, usage: Usage, gb_s: float, time: float) -> float:
        """Add ``gb_s`` at ``time`` and return its duration cost across tiers."""
        if time >= usage.month_end:
            self._roll(usage, time)
        elif time < usage.month_start:
            # Limitation: a late event of last month is priced now and not counted.
            return gb_s * usage.rate
        cost = 0.0
        left = gb_s
        while left > 0:
            room = usage.tier_end - usage.gb_s
            if left <= room:
                usage.gb_s += left
                cost += left * usage.rate
                break
            cost += room * usage.rate
            left -= room
            usage.set_gb_s(usage.tier_end)
        return cost

    def snapshot(self) -> dict[str, Any]:
        """Plain data to restore from: key -> (month start, GB-s)."""
        return {"/".join(k): [u.month_start, u.gb_s] for k, u in self._usage.items()}

    def restore(self, state: Mapping[str, Any], pricing: Pricing) -> None:
        self._usage.clear()
        for text, (month_start, gb_s) in state.items():
            provider, account, region, arch = text.split("/")
            tiers = pricing.rates(provider, region, arch).tiers
            usage = self.usage((provider, account, region, arch), tiers, month_start)
            usage.set_gb_s(float(gb_s))

    @staticmethod
    def _roll(usage: Usage, time: float) -> None:
        usage.month_start, usage.month_end = month_bounds(time)
        usage.set_gb_s(0.0)


@dataclass(frozen=True, slots=True)
class FunctionPricing:
    """What the logs do not say about a function and its price depends on."""

    architecture: str | None = None
    ephemeral_storage_mb: int = 512
    provisioned: bool = False
    memory_mb: int | None = None


@dataclass(slots=True)
class _Plan:
    """Precomputed prices of one (context, architecture), for the hot path."""

    arch: str
    rates: Rates
    usage: Usage
    request_usd: float
    simple: bool
    storage_usd_per_ms: float = 0.0
    #: Memory of the latest invocation priced with this plan (0: none yet).
    memory_mb: int = 0


_FREE = (Tier(_INF, 0.0),)
#: Placeholder of the one-entry plan cache before the first event.
_NO_PLAN = _Plan("", Rates("", "", "", AWS_LAMBDA, 0.0, _FREE), Usage(_FREE), 0.0, True)


class CostModel:
    """Prices invocations, spans and metric aggregates with tiered rates.

    Per-event work is a dict lookup, a few multiplications and a bound
    check; tier crossings and month changes take the slow path.
    """

    def __init__(
        self,
        pricing: Pricing | None = None,
        tracker: TierTracker | None = None,
        functions: Mapping[Context, FunctionPricing] | None = None,
    ) -> None:
        self.pricing = pricing if pricing is not None else Pricing.load()
        self.tracker = tracker if tracker is not None else TierTracker()
        self._functions: dict[Context, FunctionPricing] = dict(functions or {})
        self._plans: dict[tuple[Context, str], _Plan] = {}
        self._latest: dict[Context, _Plan] = {}
        self._last_context: Context | None = None
        self._last_plan = _NO_PLAN
        self._warned: set[str] = set()

    def configure(
        self,
        context: Context,
        *,
        architecture: str | None = None,
        ephemeral_storage_mb: int = 512,
        provisioned: bool = False,
        memory_mb: int | None = None,
    ) -> None:
        """Tell the model what invocation records cannot (e.g. arm64).

        ``memory_mb`` is the configured memory, which metric streams do not
        carry; it prices a function seen only through its metrics.
        """
        if memory_mb is not None and not 0 < memory_mb <= 1 << 20:
            raise ConfigError(
                f"function {'/'.join(context)}: memory_mb must be a positive"
                f" number of MB, got {memory_mb!r}"
            )
        self._functions[context] = FunctionPricing(
            architecture, ephemeral_storage_mb, provisioned, memory_mb
        )
        self._plans.clear()
        self._latest.clear()
        self._last_context = None

    def invocation_cost(self, inv: Invocation) -> float:
        """USD of one invocation: request plus duration at the tier in force."""
        # Hashing a context (five strings) is the dearest step, so the plan
        # of the previous event is reused when the very same context object
        # comes again, as it does for all invocations of one log payload.
        context = inv.context
        plan = self._last_plan
        if context is not self._last_context or plan.arch != inv.architecture:
            found = self._latest.get(context)
            if found is None or found.arch != inv.architecture:
                found = self._plan(context, inv.architecture, inv.time)
                if len(self._latest) >= MAX_PLANS:
                    self._latest.clear()
                self._latest[context] = found
            plan = self._last_plan = found
            self._last_context = context
        plan.memory_mb = inv.memory_mb
        billed = inv.billed_ms or math.ceil(inv.duration_ms)
        n = inv.count
        if plan.simple:
            # MB * ms -> GB-s is a division by 1024 * 1000.
            gb_s = inv.memory_mb * billed * n / 1_024_000
            extra = billed * n * plan.storage_usd_per_ms
        else:
            gb_s, extra = _measure(plan.rates, inv.duration_ms, billed, inv)
            gb_s *= n
            extra = (extra + billed * plan.storage_usd_per_ms) * n
        usage = plan.usage
        time = inv.time
        if usage.month_start <= time < usage.month_end:
            total = usage.gb_s + gb_s
            if total <= usage.tier_end:
                usage.gb_s = total
                return plan.request_usd * n + gb_s * usage.rate + extra
        duration = self.tracker.charge(usage, gb_s, time)
        return plan.request_usd * n + duration + extra

    def span_cost(self, span: Span) -> float:
        """Estimated USD of the invocation a span stands for (no tier update).

        Used when a trace is all there is of an invocation: the duration is
        the span's, the memory that of its resource (or the minimum).
        """
        # Limitation: a span shows no INIT time, so a cold start is underpriced.
        plan = self._plan(span.context, X86_64, span.time)
        duration_ms = max(0.0, (span.end - span.time) * 1000.0)
        memory = span.memory_mb or DEFAULT_SPAN_MEMORY_MB
        rates = plan.rates
        billed = rates.billed_ms(duration_ms)
        gb_s, extra = _measure_parts(rates, billed, memory, memory)
        extra += billed * plan.storage_usd_per_ms
        return plan.request_usd + gb_s * plan.usage.rate + extra

    def metric_cost(
        self,
        invocations_sum: float,
        duration_sum_ms: float,
        memory_mb: int,
        arch: str = X86_64,
        context: Context | None = None,
    ) -> float:
        """Estimated USD of a metric-stream aggregate (no tier update).

        The Duration metric is handler time before rounding, so each
        invocation is charged half a billing step on top of it, the expected
        rounding; the INIT share of billed time is not in the metric.
        """
        ctx = context or Context("aws", "", DEFAULT_REGION, "")
        plan = self._plan(ctx, arch, 0.0)
        rates = plan.rates
        if invocations_sum <= 0:
            return 0.0
        per_call = duration_sum_ms / invocations_sum + rates.granularity_ms / 2
        billed = max(per_call, rates.min_duration_ms) * invocations_sum
        gb_s, extra = _measure_parts(rates, billed, memory_mb, memory_mb)
        extra += billed * plan.storage_usd_per_ms
        return invocations_sum * plan.request_usd + gb_s * plan.usage.rate + extra

    def memory_for(self, context: Context) -> tuple[int, str]:
        """Memory to price a metric aggregate of ``context`` with, and its origin.

        The configured size if known, else that of the context's latest
        invocation record, else :data:`DEFAULT_METRIC_MEMORY_MB`.
        """
        function = self._functions.get(context)
        if function is not None and function.memory_mb:
            return function.memory_mb, MEMORY_CONFIGURED
        plan = self._latest.get(context)
        if plan is not None and plan.memory_mb:
            return plan.memory_mb, MEMORY_LAST_INVOCATION
        return DEFAULT_METRIC_MEMORY_MB, MEMORY_DEFAULT

    def metric_minute_cost(
        self, context: Context, invocations_sum: float, duration_sum_ms: float
    ) -> tuple[float, str]:
        """USD of a metric aggregate of ``context``, and where its memory came from.

        The memory is the configured one, else that of the latest invocation
        record, else the default (see :meth:`memory_for`).
        """
        memory, origin = self.memory_for(context)
        arch = self.architecture_of(context)
        cost = self.metric_cost(invocations_sum, duration_sum_ms, memory, arch, context)
        return cost, origin

    def architecture_of(self, context: Context) -> str:
        """The configured architecture of a context, else x86_64."""
        function = self._functions.get(context)
        if function is not None and function.architecture:
            return function.architecture
        return X86_64

    def provisioned_cost(
        self,
        context: Context,
        memory_mb: int,
        concurrency: int,
        seconds: float,
        arch: str = X86_64,
    ) -> float:
        """USD of keeping ``concurrency`` environments provisioned for ``seconds``."""
        rates = self.pricing.rates(context.provider, context.region, arch)
        gb_s = memory_mb * rates.gb_per_mb * concurrency * seconds
        return gb_s * rates.provisioned_usd_per_gb_s

    def rates_for(self, context: Context, arch: str = X86_64) -> Rates:
        """The rates an invocation of ``context`` is priced with."""
        return self._plan(context, arch, 0.0).rates

    def _plan(self, context: Context, arch: str, time: float) -> _Plan:
        key = (context, arch)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        plan = self._plans[key] = self._build_plan(context, arch, time)
        return plan

    def _build_plan(self, context: Context, reported: str, time: float) -> _Plan:
        function = self._functions.get(context)
        arch = reported
        if function is not None and function.architecture:
            arch = function.architecture
        try:
            rates = self.pricing.rates(context.provider, context.region, arch)
        except ConfigError as exc:
            if context.provider not in self._warned:
                self._warned.add(context.provider)
                logger.warning("unpriced provider=%s reason=%s", context.provider, exc)
            free = (Tier(_INF, 0.0),)
            rates = Rates(context.provider, context.region, arch, AWS_LAMBDA, 0.0, free)
            usage = Usage(free, -_INF, _INF)
            usage.set_gb_s(0.0)
            return _Plan(reported, rates, usage, 0.0, True)
        storage_per_ms = 0.0
        free_mb = rates.storage_free_mb
        if function is not None and function.ephemeral_storage_mb > free_mb:
            extra_gb = (function.ephemeral_storage_mb - free_mb) * rates.gb_per_mb
            storage_per_ms = extra_gb * rates.storage_usd_per_gb_s / 1000.0
        if function is not None and function.provisioned:
            # Provisioned duration has one flat rate and no volume tiers.
            flat = (Tier(_INF, rates.provisioned_duration_usd_per_gb_s),)
            usage = Usage(flat, -_INF, _INF)
            usage.set_gb_s(0.0)
        else:
            key = (
                context.provider,
                context.account,
                context.region,
                rates.architecture,
            )
            usage = self.tracker.usage(key, rates.tiers, time)
        simple = rates.model == AWS_LAMBDA and rates.gb_per_mb == 1 / 1024
        return _Plan(reported, rates, usage, rates.request_usd, simple, storage_per_ms)


def _measure(
    rates: Rates, duration_ms: float, billed_ms: float, inv: Invocation
) -> tuple[float, float]:
    """GB-s and non-duration extras of an invocation on a rounding provider."""
    aws = rates.model == AWS_LAMBDA
    billed = billed_ms if aws else rates.billed_ms(duration_ms)
    observed = inv.max_memory_mb if rates.model == AZURE_CONSUMPTION else 0
    return _measure_parts(rates, billed, inv.memory_mb, observed or inv.memory_mb)


def _measure_parts(
    rates: Rates, billed_ms: float, memory_mb: int, charged_mb: int
) -> tuple[float, float]:
    """GB-s of ``billed_ms`` at the charged memory, and the CPU charge if any."""
    mb = rates.billed_memory_mb(charged_mb)
    seconds = billed_ms / 1000.0
    gb_s = mb * rates.gb_per_mb * seconds
    extra = 0.0
    if rates.usd_per_ghz_s:
        extra = rates.ghz(memory_mb) * seconds * rates.usd_per_ghz_s
    return gb_s, extra


_default_model: CostModel | None = None


def default_model() -> CostModel:
    """A process-wide model on the bundled tables (built on first use)."""
    global _default_model
    if _default_model is None:
        _default_model = Pricing.load().model
    return _default_model


def invocation_cost(inv: Invocation) -> float:
    """USD of one invocation with the process-wide model's tier state."""
    return default_model().invocation_cost(inv)


def span_cost(span: Span) -> float:
    """USD estimate of the invocation behind a span (see CostModel.span_cost)."""
    return default_model().span_cost(span)


def metric_cost(
    invocations_sum: float,
    duration_sum_ms: float,
    memory_mb: int,
    arch: str = X86_64,
    context: Context | None = None,
) -> float:
    """USD estimate of a metric aggregate (see CostModel.metric_cost)."""
    return default_model().metric_cost(
        invocations_sum, duration_sum_ms, memory_mb, arch, context
    )
