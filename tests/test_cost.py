"""Cost model: worked examples from the published prices, tiers, rounding."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detector.cost import (
    ARM64,
    CostModel,
    Pricing,
    TierTracker,
    month_bounds,
)
from dowguard.errors import ConfigError
from ingest.events import Context, Invocation, Span

# Published us-east-1 prices (see data/pricing/README.md), written out here
# so that a wrong table, not only wrong code, fails these tests.
X86_TIER1 = 0.0000166667
X86_TIER2 = 0.000015
ARM_TIER1 = 0.0000133334
REQUEST = 0.0000002

MARCH = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
APRIL = datetime(2026, 4, 1, 0, 0, 5, tzinfo=UTC).timestamp()
AWS = Context("aws", "111122223333", "us-east-1", "resize")


@pytest.fixture(scope="module")
def pricing() -> Pricing:
    return Pricing.load()


@pytest.fixture
def model(pricing: Pricing) -> CostModel:
    return CostModel(pricing)


def invocation(
    context: Context = AWS,
    billed_ms: float = 300,
    memory_mb: int = 512,
    time: float = MARCH,
    **kw: object,
) -> Invocation:
    return Invocation(context, time, "req", billed_ms, billed_ms, memory_mb, **kw)


def test_invocation_cost_matches_512mb_300ms_example(model: CostModel) -> None:
    # 512 MB x 300 ms = 0.15 GB-s at the first x86 tier, plus one request.
    assert model.invocation_cost(invocation()) == pytest.approx(
        0.15 * X86_TIER1 + REQUEST, rel=1e-9
    )


def test_cost_comes_from_billed_duration_with_init_not_added_again(
    model: CostModel,
) -> None:
    # Since 2025-08-01 Billed Duration already holds INIT: ceil(1233.96 + 463.512).
    inv = Invocation(AWS, MARCH, "r", 1233.96, 1698, 1024, init_ms=463.512)
    expected = 1.0 * 1.698 * X86_TIER1 + REQUEST
    assert model.invocation_cost(inv) == pytest.approx(expected, rel=1e-9)


def test_arm64_invocation_is_priced_at_the_arm_rate(model: CostModel) -> None:
    inv = invocation(memory_mb=1024, billed_ms=1000, architecture=ARM64)
    assert model.invocation_cost(inv) == pytest.approx(ARM_TIER1 + REQUEST)


def test_configured_architecture_overrides_the_report_default(
    model: CostModel,
) -> None:
    # REPORT lines cannot show arm64: the parsers leave x86_64 in place.
    model.configure(AWS, architecture=ARM64)
    inv = invocation(memory_mb=1024, billed_ms=1000)
    assert model.invocation_cost(inv) == pytest.approx(ARM_TIER1 + REQUEST)


def test_rate_moves_to_second_tier_within_one_invocation(pricing: Pricing) -> None:
    tracker = TierTracker()
    tiers = pricing.rates("aws", "us-east-1").tiers
    key = ("aws", AWS.account, "us-east-1", "x86_64")
    tracker.seed(key, tiers, 6e9 - 0.05, MARCH)
    model = CostModel(pricing, tracker)
    # 0.15 GB-s: 0.05 still in tier 1, 0.10 in tier 2.
    cost = model.invocation_cost(invocation())
    assert cost == pytest.approx(0.05 * X86_TIER1 + 0.10 * X86_TIER2 + REQUEST)
    # The next one is all in tier 2.
    assert model.invocation_cost(invocation()) == pytest.approx(
        0.15 * X86_TIER2 + REQUEST
    )
    assert tracker.month_to_date(key) == pytest.approx(6e9 + 0.25)


def test_tier_count_starts_again_in_a_new_month(pricing: Pricing) -> None:
    tracker = TierTracker()
    tiers = pricing.rates("aws", "us-east-1").tiers
    key = ("aws", AWS.account, "us-east-1", "x86_64")
    tracker.seed(key, tiers, 7e9, MARCH)
    model = CostModel(pricing, tracker)
    assert model.invocation_cost(invocation()) == pytest.approx(
        0.15 * X86_TIER2 + REQUEST
    )
    assert model.invocation_cost(invocation(time=APRIL)) == pytest.approx(
        0.15 * X86_TIER1 + REQUEST
    )
    assert tracker.month_to_date(key) == pytest.approx(0.15)


def test_tiers_are_kept_per_account_region_and_architecture(
    pricing: Pricing,
) -> None:
    tracker = TierTracker()
    tiers = pricing.rates("aws", "us-east-1").tiers
    tracker.seed(("aws", AWS.account, "us-east-1", "x86_64"), tiers, 7e9, MARCH)
    model = CostModel(pricing, tracker)
    other_account = AWS._replace(account="999988887777")
    other_region = AWS._replace(region="us-west-2")
    for ctx in (other_account, other_region):
        assert model.invocation_cost(invocation(ctx)) == pytest.approx(
            0.15 * X86_TIER1 + REQUEST
        )
    arm = invocation(architecture=ARM64)
    assert model.invocation_cost(arm) == pytest.approx(0.15 * ARM_TIER1 + REQUEST)


def test_late_event_of_previous_month_does_not_reset_the_month(
    pricing: Pricing,
) -> None:
    tracker = TierTracker()
    model = CostModel(pricing, tracker)
    model.invocation_cost(invocation(time=APRIL))
    model.invocation_cost(invocation(time=MARCH))
    key = ("aws", AWS.account, "us-east-1", "x86_64")
    assert tracker.month_to_date(key) == pytest.approx(0.15)


def test_regional_first_tier_price_overrides_the_default(model: CostModel) -> None:
    cape_town = AWS._replace(region="af-south-1")
    inv = invocation(cape_town, billed_ms=1000, memory_mb=1024)
    assert model.invocation_cost(inv) == pytest.approx(0.0000221 + REQUEST)


def test_unknown_region_uses_default_prices(model: CostModel) -> None:
    # The CloudWatch parser names the region "unknown" when a payload lacks it.
    inv = invocation(AWS._replace(region="unknown"))
    assert model.invocation_cost(inv) == pytest.approx(0.15 * X86_TIER1 + REQUEST)


def test_ephemeral_storage_above_512mb_is_charged(model: CostModel) -> None:
    model.configure(AWS, ephemeral_storage_mb=2560)
    inv = invocation(billed_ms=1000, memory_mb=1024)
    storage = 2.0 * 1.0 * 0.0000000309
    assert model.invocation_cost(inv) == pytest.approx(X86_TIER1 + REQUEST + storage)


def test_provisioned_function_uses_the_flat_provisioned_duration_rate(
    model: CostModel,
) -> None:
    model.configure(AWS, provisioned=True)
    inv = invocation(billed_ms=1000, memory_mb=1024)
    assert model.invocation_cost(inv) == pytest.approx(0.0000097222 + REQUEST)
    # Provisioned duration does not count toward the on-demand tiers.
    assert model.tracker.month_to_date(("aws", AWS.account, "us-east-1", "x86_64")) == 0


def test_provisioned_concurrency_charge(model: CostModel) -> None:
    # Two 1 GB environments kept for an hour.
    cost = model.provisioned_cost(AWS, 1024, 2, 3600.0)
    assert cost == pytest.approx(2 * 3600 * 0.0000041667)


def test_count_multiplies_an_aggregated_record(model: CostModel) -> None:
    one = CostModel(model.pricing).invocation_cost(invocation())
    assert model.invocation_cost(invocation(count=10)) == pytest.approx(10 * one)


def test_missing_billed_duration_falls_back_to_rounded_duration(
    model: CostModel,
) -> None:
    inv = Invocation(AWS, MARCH, "r", 299.2, 0, 512)
    assert model.invocation_cost(inv) == pytest.approx(0.15 * X86_TIER1 + REQUEST)


def test_azure_rounds_memory_up_to_128mb_steps(model: CostModel) -> None:
    ctx = Context("azure", "sub", "eastus", "fn")
    # 200 MB observed is billed as 256 MB; 50 ms runs are billed as 100 ms.
    inv = Invocation(ctx, MARCH, "r", 50.2, 0, 1536, max_memory_mb=200)
    expected = 0.25 * 0.1 * 0.000016 + 0.0000002
    assert model.invocation_cost(inv) == pytest.approx(expected)


def test_azure_caps_memory_at_1536mb(model: CostModel) -> None:
    ctx = Context("azure", "sub", "eastus", "fn")
    inv = Invocation(ctx, MARCH, "r", 1000.0, 0, 4096, max_memory_mb=3000)
    assert model.invocation_cost(inv) == pytest.approx(1.5 * 0.000016 + 0.0000002)


def test_gcp_rounds_duration_up_to_100ms_and_charges_cpu(model: CostModel) -> None:
    ctx = Context("gcp", "project", "us-central1", "fn")
    # 260 ms is billed as 300 ms; 128 MB comes with 200 MHz.
    inv = Invocation(ctx, MARCH, "r", 260.0, 260, 128)
    expected = 0.125 * 0.3 * 0.0000025 + 0.2 * 0.3 * 0.00001 + 0.0000004
    assert model.invocation_cost(inv) == pytest.approx(expected)


def test_gcp_per_100ms_price_of_128mb_matches_published_figure(
    model: CostModel,
) -> None:
    # The published 1st gen price of 128 MB is $0.000000231 per 100 ms.
    ctx = Context("gcp", "project", "us-central1", "fn")
    inv = Invocation(ctx, MARCH, "r", 100.0, 100, 128)
    assert model.invocation_cost(inv) - 0.0000004 == pytest.approx(2.31e-7, rel=2e-3)


def test_span_cost_estimates_from_span_duration_and_memory(
    model: CostModel,
) -> None:
    span = Span(AWS, MARCH, MARCH + 0.2995, "t" * 32, "s" * 16, memory_mb=512)
    assert model.span_cost(span) == pytest.approx(0.15 * X86_TIER1 + REQUEST)


def test_span_cost_assumes_minimum_memory_when_unknown(model: CostModel) -> None:
    span = Span(AWS, MARCH, MARCH + 1.0, "t" * 32, "s" * 16)
    assert model.span_cost(span) == pytest.approx(0.125 * X86_TIER1 + REQUEST)


def test_span_cost_does_not_move_the_tiers(model: CostModel) -> None:
    span = Span(AWS, MARCH, MARCH + 1.0, "t" * 32, "s" * 16, memory_mb=1024)
    model.span_cost(span)
    key = ("aws", AWS.account, "us-east-1", "x86_64")
    assert model.tracker.month_to_date(key) == 0


def test_metric_cost_adds_half_a_billing_step_per_invocation(
    model: CostModel,
) -> None:
    # 1000 invocations, 299.5 ms each on average: billed about 300 ms each.
    cost = model.metric_cost(1000, 299_500.0, 512, context=AWS)
    assert cost == pytest.approx(1000 * (0.15 * X86_TIER1 + REQUEST))
    assert model.metric_cost(0, 0.0, 512) == 0.0


def test_unknown_provider_is_priced_at_zero(
    model: CostModel, caplog: pytest.LogCaptureFixture
) -> None:
    inv = invocation(Context("otel", "", "", "svc", ""))
    assert model.invocation_cost(inv) == 0.0
    assert "unpriced provider=otel" in caplog.text


def test_pricing_exposes_the_model_functions_for_the_engine(
    pricing: Pricing,
) -> None:
    price = pricing.invocation_cost
    assert price(invocation(time=MARCH)) == pytest.approx(0.15 * X86_TIER1 + REQUEST)
    assert pricing.span_cost.__self__ is pricing.model


def test_tracker_snapshot_restores_month_to_date(pricing: Pricing) -> None:
    tracker = TierTracker()
    model = CostModel(pricing, tracker)
    for _ in range(3):
        model.invocation_cost(invocation())
    state = json.loads(json.dumps(tracker.snapshot()))
    copy = TierTracker()
    copy.restore(state, pricing)
    key = ("aws", AWS.account, "us-east-1", "x86_64")
    assert copy.month_to_date(key) == pytest.approx(0.45)


def test_month_bounds_wrap_at_december() -> None:
    start, end = month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(end, UTC) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "moments",
    [
        # Within a month, to the next and back, and at the very edges.
        [(2026, 11, 15), (2026, 12, 31, 23, 59), (2027, 1, 1), (2026, 12, 1)],
        [(2026, 2, 28, 23, 59, 59), (2026, 3, 1), (2026, 2, 1), (2026, 2, 28)],
    ],
)
def test_month_bounds_follow_the_time_asked_whatever_came_before(
    moments: list[tuple[int, ...]],
) -> None:
    for moment in moments:
        at = datetime(*moment, tzinfo=UTC)
        start, end = month_bounds(at.timestamp())
        first = datetime(at.year, at.month, 1, tzinfo=UTC)
        after = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
        assert (start, end) == (first.timestamp(), after.timestamp()), moment


def test_every_bundled_table_names_sources_and_date() -> None:
    folder = Path(__file__).resolve().parent.parent / "data" / "pricing"
    for path in sorted(folder.glob("*.json")):
        table = json.loads(path.read_text())
        assert table["sources"], path.name
        assert datetime.fromisoformat(table["as_of"]), path.name
        assert table["free_tier"]["subtracted_in_realtime_cost"] is False


def test_free_tier_is_not_subtracted(model: CostModel) -> None:
    # The very first invocation of the month is paid: marginal spend.
    first = invocation(time=datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    assert model.invocation_cost(first) > 0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"provider": "aws", "model": "aws_lambda"}', "missing field 'regions'"),
        (
            '{"provider": "x", "model": "flat", "regions": {}}',
            "model 'flat' is not one of",
        ),
        (
            '{"provider": "x", "model": "aws_lambda", "regions": {"default":'
            ' {"request_usd": 0, "duration_tiers": {"x86_64":'
            ' [{"up_to_gb_s": 10, "usd_per_gb_s": 1}]}}}}',
            "last tier needs up_to_gb_s null",
        ),
        (
            '{"provider": "x", "model": "aws_lambda", "regions": {"default":'
            ' {"request_usd": 0, "duration_tiers": {"x86_64":'
            ' [{"up_to_gb_s": 10, "usd_per_gb_s": 1},'
            ' {"up_to_gb_s": 5, "usd_per_gb_s": 1}]}}}}',
            "must grow",
        ),
    ],
)
def test_load_rejects_a_bad_table_naming_file_and_field(
    tmp_path: Path, table: str, message: str
) -> None:
    (tmp_path / "bad.json").write_text(table)
    with pytest.raises(ConfigError) as err:
        Pricing.load(tmp_path)
    assert "bad.json" in str(err.value)
    assert message in str(err.value)


def test_load_of_an_empty_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \*\.json tables"):
        Pricing.load(tmp_path)


def test_pricing_dir_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Path(__file__).resolve().parent.parent / "data" / "pricing"
    (tmp_path / "aws.json").write_bytes((source / "aws_lambda.json").read_bytes())
    monkeypatch.setenv("DOWGUARD_PRICING_DIR", str(tmp_path))
    assert Pricing.load().providers == ("aws",)


def test_rates_round_like_the_providers(pricing: Pricing) -> None:
    gcp = pricing.rates("gcp", "us-central1")
    assert gcp.billed_ms(260.0) == 300.0
    assert gcp.billed_ms(300.0) == 300.0
    azure = pricing.rates("azure", "eastus")
    assert azure.billed_memory_mb(129) == 256
    assert azure.billed_ms(12.0) == 100.0
    aws = pricing.rates("aws", "us-east-1")
    assert aws.billed_ms(812.4) == 813.0
    assert math.isinf(aws.tiers[-1].up_to_gb_s)
    assert aws.tier_rate(6e9 + 1) == X86_TIER2


def test_alternating_contexts_and_architectures_keep_their_own_prices(
    model: CostModel,
) -> None:
    cape_town = AWS._replace(region="af-south-1")
    runs = [
        (AWS, "x86_64", X86_TIER1),
        (cape_town, "x86_64", 0.0000221),
        (AWS, ARM64, ARM_TIER1),
        (AWS, "x86_64", X86_TIER1),
        (cape_town, "x86_64", 0.0000221),
    ]
    for ctx, arch, rate in runs * 2:
        inv = invocation(ctx, billed_ms=1000, memory_mb=1024, architecture=arch)
        assert model.invocation_cost(inv) == pytest.approx(rate + REQUEST)


def test_configure_after_first_use_takes_effect(model: CostModel) -> None:
    inv = invocation(billed_ms=1000, memory_mb=1024)
    assert model.invocation_cost(inv) == pytest.approx(X86_TIER1 + REQUEST)
    model.configure(AWS, architecture=ARM64)
    assert model.invocation_cost(inv) == pytest.approx(ARM_TIER1 + REQUEST)


def test_metric_memory_is_configured_then_last_seen_then_the_default() -> None:
    from detector.cost import DEFAULT_METRIC_MEMORY_MB

    model = CostModel(Pricing.load())
    ctx = Context("aws", "1", "us-east-1", "fn")
    assert model.memory_for(ctx) == (DEFAULT_METRIC_MEMORY_MB, "default")
    model.invocation_cost(Invocation(ctx, MARCH, "r", 10.0, 10.0, 1769))
    assert model.memory_for(ctx) == (1769, "last_invocation")
    model.configure(ctx, memory_mb=512)
    assert model.memory_for(ctx) == (512, "config")
    cost, origin = model.metric_minute_cost(ctx, 100.0, 100_000.0)
    assert origin == "config"
    assert cost == pytest.approx(model.metric_cost(100.0, 100_000.0, 512, context=ctx))


def test_configured_memory_must_be_a_size() -> None:
    model = CostModel(Pricing.load())
    with pytest.raises(ConfigError, match="memory_mb"):
        model.configure(Context("aws", "1", "us-east-1", "fn"), memory_mb=0)
