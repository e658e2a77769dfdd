"""FOCUS 1.0-1.2 cost rows (CSV, Parquet, JSON lines) into :class:`Billing`.

Function usage of AWS Lambda, Azure Functions and Google Cloud Functions is
kept; rows of other services, charges that are not usage and corrections are
skipped and counted. Rows billed in a currency other than USD are skipped
with a warning: there is no exchange rate to convert them with.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from dowguard.errors import ParseError
from ingest.events import Billing, Context
from ingest.formats.cur import (
    ErrorSink,
    amount,
    function_context,
    read_csv,
    read_parquet,
    report,
    timestamp,
    usage_kind,
)

logger = logging.getLogger(__name__)

_REQUIRED = ("ChargePeriodStart", "ChargePeriodEnd", "BilledCost")
_WANTED = (
    *_REQUIRED,
    "BillingCurrency",
    "ChargeCategory",
    "ChargeClass",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingUnit",
    "SkuId",
    "ChargeDescription",
    "ServiceName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ProviderName",
    "ServiceProviderName",
    "RegionId",
    "SubAccountId",
    "BillingAccountId",
    "x_UsageType",
)

_SERVICES = {
    "aws lambda": "aws",
    "azure functions": "azure",
    "functions": "azure",
    "cloud functions": "gcp",
    "cloud run functions": "gcp",
}
_PROVIDERS = {
    "aws": "aws",
    "amazon web services": "aws",
    "microsoft": "azure",
    "azure": "azure",
    "microsoft azure": "azure",
    "google cloud": "gcp",
    "google": "gcp",
    "gcp": "gcp",
}
#: Words of a unit, SKU or description that tell the usage kind, first match
#: wins: provisioned capacity and storage are also billed in GB-seconds.
_KIND_WORDS = (
    ("provisioned", "provisioned"),
    ("storage", "storage"),
    ("gb-second", "gb_seconds"),
    ("gib-second", "gb_seconds"),
    ("gb second", "gb_seconds"),
    ("gb-s", "gb_seconds"),
    ("execution time", "gb_seconds"),
    ("request", "requests"),
    ("invocation", "requests"),
    ("execution", "requests"),
)

_ARM = re.compile(r"\barm(?:64)?\b")

Getter = Callable[[str], Any]


def looks_like_focus_header(header: list[str]) -> bool:
    names = {name.strip() for name in header}
    return all(name in names for name in _REQUIRED) and bool(
        names & {"ServiceName", "ResourceId"}
    )


def looks_like_focus_record(obj: object) -> bool:
    return isinstance(obj, dict) and all(name in obj for name in _REQUIRED)


def parse_focus_csv(
    raw: bytes, source: str, on_error: ErrorSink | None = None
) -> list[Billing]:
    """Function charges of a FOCUS CSV export (header line first).

    Without ``on_error`` the first bad row raises :class:`ParseError`; with
    it, each bad row is reported there and the others are kept.
    """
    header, rows = read_csv(raw, source)
    return list(focus_events(header, rows, source, on_error))


def parse_focus_parquet(
    path_or_bytes: str | Path | bytes, source: str, on_error: ErrorSink | None = None
) -> list[Billing]:
    header, rows = read_parquet(path_or_bytes, source, _WANTED, str.strip)
    return list(focus_events(header, rows, source, on_error))


def parse_focus_jsonl(
    raw: bytes, source: str, on_error: ErrorSink | None = None
) -> list[Billing]:
    """Function charges of FOCUS rows as JSON objects, one per line."""
    counts: Counter[str] = Counter()
    events: list[Billing] = []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise ParseError(source, f"line {n}", "FOCUS row must be an object")
            outcome = _record(obj.get, source, f"line {n}")
        except orjson.JSONDecodeError as exc:
            report(ParseError(source, f"line {n}", f"invalid JSON: {exc}"), on_error)
            continue
        except ParseError as exc:
            report(exc, on_error)
            continue
        if isinstance(outcome, str):
            counts[outcome] += 1
        else:
            events.append(outcome)
    _log_counts(counts, len(events), source)
    return events


def parse_focus_record(
    obj: dict[str, Any], source: str, position: str
) -> list[Billing]:
    """The charge of one FOCUS row already decoded from JSON, or [] if skipped."""
    outcome = _record(obj.get, source, position)
    if isinstance(outcome, str):
        _log_counts(Counter([outcome]), 0, source)
        return []
    return [outcome]


def focus_events(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    source: str,
    on_error: ErrorSink | None = None,
) -> Iterator[Billing]:
    """Billing events of FOCUS rows under ``header``."""
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in _REQUIRED if name not in index]
    if missing:
        raise ParseError(source, "header", f"FOCUS columns missing: {missing}")
    counts: Counter[str] = Counter()
    kept = 0
    for n, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) != len(header):
            message = f"{len(row)} fields, header has {len(header)}"
            report(ParseError(source, f"row {n}", message), on_error)
            continue

        def get(name: str, row: Sequence[Any] = row) -> Any:
            i = index.get(name)
            return None if i is None else row[i]

        try:
            outcome = _record(get, source, f"row {n}")
        except ParseError as exc:
            report(exc, on_error)
            continue
        if isinstance(outcome, str):
            counts[outcome] += 1
        else:
            kept += 1
            yield outcome
    _log_counts(counts, kept, source)


def _log_counts(counts: Counter[str], kept: int, source: str) -> None:
    if counts["currency"]:
        logger.warning(
            "focus rows skipped reason=currency source=%s rows=%d",
            source,
            counts["currency"],
        )
    logger.debug(
        "focus rows read source=%s kept=%d skipped=%s", source, kept, dict(counts)
    )


def _text(get: Getter, name: str) -> str:
    value = get(name)
    return "" if value is None else str(value).strip()


def _record(get: Getter, source: str, pos: str) -> Billing | str:
    """The Billing of one row, or the reason it is skipped."""
    provider = _function_provider(get)
    if provider is None:
        return "service"
    if _text(get, "ChargeCategory").lower() not in ("usage", ""):
        return "category"
    if _text(get, "ChargeClass").lower() == "correction":
        return "correction"
    currency = _text(get, "BillingCurrency")
    if not currency:
        raise ParseError(source, f"{pos} column BillingCurrency", "currency missing")
    if currency.upper() != "USD":
        # Limitation: no currency conversion, so non-USD accounts get no billing.
        return "currency"
    start = timestamp(
        get("ChargePeriodStart"), source, f"{pos} column ChargePeriodStart"
    )
    end = timestamp(get("ChargePeriodEnd"), source, f"{pos} column ChargePeriodEnd")
    if end < start:
        raise ParseError(
            source, f"{pos} column ChargePeriodEnd", "period ends before it starts"
        )
    kind, arch = _usage_kind(get)
    return Billing(
        context=_context(get, provider),
        time=start,
        end=end,
        cost_usd=amount(get("BilledCost"), source, f"{pos} column BilledCost"),
        usage_amount=amount(
            get("ConsumedQuantity"), source, f"{pos} column ConsumedQuantity"
        ),
        usage_kind=kind,
        source="focus",
        architecture=arch,
    )


def _function_provider(get: Getter) -> str | None:
    """The provider of a serverless function row, None for other services."""
    service = _text(get, "ServiceName").lower()
    if service in _SERVICES:
        return _SERVICES[service]
    if _text(get, "ResourceId").startswith("arn:aws:lambda:"):
        return "aws"
    if "function" in _text(get, "ResourceType").lower():
        name = _text(get, "ServiceProviderName") or _text(get, "ProviderName")
        return _PROVIDERS.get(name.lower(), name.lower() or "unknown")
    return None


def _context(get: Getter, provider: str) -> Context:
    account = _text(get, "SubAccountId") or _text(get, "BillingAccountId")
    region = _text(get, "RegionId")
    if provider == "aws":
        return function_context(_text(get, "ResourceId"), account, region)
    return Context(provider, account, region, _text(get, "ResourceName"), "")


def _usage_kind(get: Getter) -> tuple[str, str]:
    # AWS exports carry the CUR usage type, which is more exact than units.
    usage_type = _text(get, "x_UsageType")
    if usage_type:
        kind, arch = usage_kind(usage_type)
        if kind != "other":
            return kind, arch
    words = " ".join(
        _text(get, name).lower()
        for name in ("ConsumedUnit", "PricingUnit", "SkuId", "ChargeDescription")
    )
    arch = "arm64" if _ARM.search(words) else "x86_64"
    for word, kind in _KIND_WORDS:
        if word in words:
            return kind, arch
    return "other", arch
