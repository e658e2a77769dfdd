"""AWS Cost and Usage Report rows (legacy CUR and CUR 2.0) into :class:`Billing`.

Only Lambda usage becomes events: rows of other services and line items that
are not usage (credits, taxes, fees, refunds) are skipped and counted. Also
home of the row helpers (numbers, timestamps, error routing) that the FOCUS
parser shares.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from dowguard.errors import ParseError
from ingest.events import Billing, Context
from ingest.formats.common import LATEST_EVENT_TIME_S

logger = logging.getLogger(__name__)

ErrorSink = Callable[[ParseError], None]

#: Largest amount or cost a single row may carry; beyond it the row is junk.
MAX_AMOUNT = 1e15

_USAGE_LINE_ITEMS = frozenset({"Usage", "SavingsPlanCoveredUsage", "DiscountedUsage"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_PRODUCT = "line_item_product_code"
_USAGE_TYPE = "line_item_usage_type"
_LINE_TYPE = "line_item_line_item_type"
_START = "line_item_usage_start_date"
_END = "line_item_usage_end_date"
_INTERVAL = "identity_time_interval"
_RESOURCE = "line_item_resource_id"
_AMOUNT = "line_item_usage_amount"
_COST = "line_item_unblended_cost"
_ACCOUNT = "line_item_usage_account_id"
_REGIONS = ("product_region_code", "product_region")
_REQUIRED = (_PRODUCT, _USAGE_TYPE, _START, _AMOUNT, _COST)
_WANTED = (*_REQUIRED, _LINE_TYPE, _END, _INTERVAL, _RESOURCE, _ACCOUNT, *_REGIONS)


def normalise_column(name: str) -> str:
    """``lineItem/UsageStartDate`` -> ``line_item_usage_start_date``."""
    return _CAMEL.sub("_", name.strip().replace("/", "_")).lower()


def looks_like_cur_header(header: list[str]) -> bool:
    names = {normalise_column(name) for name in header}
    return _PRODUCT in names and _USAGE_TYPE in names and _START in names


def usage_kind(usage_type: str) -> tuple[str, str]:
    """``(usage_kind, architecture)`` from a Lambda usage type.

    The region prefix (``USE2-``) is absent on some us-east-1 rows, so the
    match is on the suffix.
    """
    arch = "x86_64"
    if usage_type.endswith("-ARM"):
        usage_type = usage_type[:-4]
        arch = "arm64"
    if "Provisioned-" in usage_type:
        return "provisioned", arch
    if usage_type.endswith("Storage-GB-Second"):
        return "storage", arch
    if usage_type.endswith("GB-Second"):
        return "gb_seconds", arch
    if usage_type.endswith(("Request", "Requests")):
        return "requests", arch
    return "other", arch


def parse_cur_csv(
    raw: bytes, source: str, on_error: ErrorSink | None = None
) -> list[Billing]:
    """Lambda charges of a CUR CSV (header line first).

    Without ``on_error`` the first bad row raises :class:`ParseError`; with
    it, each bad row is reported there and the others are kept.
    """
    header, rows = read_csv(raw, source)
    return list(cur_events(header, rows, source, on_error))


def parse_cur_parquet(
    path_or_bytes: str | Path | bytes, source: str, on_error: ErrorSink | None = None
) -> list[Billing]:
    """Lambda charges of a CUR 2.0 (or Athena-style legacy) Parquet file."""
    header, rows = read_parquet(path_or_bytes, source, _WANTED, normalise_column)
    return list(cur_events(header, rows, source, on_error))


def cur_events(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    source: str,
    on_error: ErrorSink | None = None,
) -> Iterator[Billing]:
    """Billing events of CUR rows under ``header`` (any column naming)."""
    index = {normalise_column(name): i for i, name in enumerate(header)}
    missing = [name for name in _REQUIRED if name not in index]
    if _END not in index and _INTERVAL not in index:
        missing.append(_END)
    if missing:
        raise ParseError(source, "header", f"CUR columns missing: {missing}")
    product = index[_PRODUCT]
    line_type = index.get(_LINE_TYPE)
    kept = skipped = 0
    for n, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) != len(header):
            report(
                ParseError(
                    source, f"row {n}", f"{len(row)} fields, header has {len(header)}"
                ),
                on_error,
            )
            continue
        if row[product] != "AWSLambda" or (
            line_type is not None and row[line_type] not in _USAGE_LINE_ITEMS
        ):
            skipped += 1
            continue
        try:
            yield _cur_row(row, index, source, f"row {n}")
            kept += 1
        except ParseError as exc:
            report(exc, on_error)
    logger.debug("cur rows read source=%s kept=%d skipped=%d", source, kept, skipped)


def _cur_row(
    row: Sequence[Any], index: dict[str, int], source: str, pos: str
) -> Billing:
    def text(name: str) -> str:
        i = index.get(name)
        value = row[i] if i is not None else None
        return "" if value is None else str(value).strip()

    kind, arch = usage_kind(text(_USAGE_TYPE))
    start = timestamp(row[index[_START]], source, f"{pos} column {_START}")
    if _END in index:
        end = timestamp(row[index[_END]], source, f"{pos} column {_END}")
    else:
        _, _, tail = text(_INTERVAL).partition("/")
        end = timestamp(tail, source, f"{pos} column {_INTERVAL}")
    if end < start:
        raise ParseError(source, f"{pos} column {_END}", "usage ends before it starts")
    account = text(_ACCOUNT)
    region = next((r for name in _REGIONS if (r := text(name))), "")
    resource = text(_RESOURCE)
    # Limitation: CUR bills all versions of a function together, under $LATEST.
    context = function_context(resource, account, region)
    return Billing(
        context=context,
        time=start,
        end=end,
        cost_usd=amount(row[index[_COST]], source, f"{pos} column {_COST}"),
        usage_amount=amount(row[index[_AMOUNT]], source, f"{pos} column {_AMOUNT}"),
        usage_kind=kind,
        source="cur",
        architecture=arch,
    )


def function_context(resource: str, account: str, region: str) -> Context:
    """The function a charge belongs to, or the account when none is named."""
    if resource.startswith("arn:"):
        try:
            return Context.from_arn(resource)
        except ValueError:
            logger.debug("billing resource not a function resource=%s", resource)
    return Context("aws", account, region, "", "")


# ---- row helpers shared with the FOCUS parser ------------------------------------


def report(error: ParseError, on_error: ErrorSink | None) -> None:
    """Hand a row error to ``on_error``, or raise it when there is none."""
    if on_error is None:
        raise error
    on_error(error)


def amount(value: Any, source: str, pos: str) -> float:
    """A finite, non-negative decimal from a CSV cell or a Parquet value."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise ParseError(source, pos, f"number expected, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ParseError(source, pos, f"number expected, got {value!r:.40}") from exc
    if not math.isfinite(number) or not 0 <= number <= MAX_AMOUNT:
        raise ParseError(source, pos, f"amount out of range: {value!r:.40}")
    return number


def timestamp(value: Any, source: str, pos: str) -> float:
    """Epoch seconds of an ISO-8601 text or a datetime; naive means UTC."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    elif isinstance(value, str):
        parsed = _iso_seconds(value.strip())
        if parsed is None:
            raise ParseError(source, pos, f"bad timestamp {value!r:.40}")
        seconds = parsed
    else:
        raise ParseError(source, pos, f"timestamp expected, got {value!r:.40}")
    if not 0 <= seconds <= LATEST_EVENT_TIME_S:
        raise ParseError(source, pos, f"timestamp out of range: {value!r:.40}")
    return seconds


@lru_cache(maxsize=4096)
def _iso_seconds(text: str) -> float | None:
    # Billing rows repeat the same hour boundaries thousands of times.
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_csv(raw: bytes, source: str) -> tuple[list[str], Iterator[list[str]]]:
    """Header and data rows of CSV bytes (UTF-8, optional BOM).

    Rows are read lazily; a row the CSV reader refuses ends the file with a
    :class:`ParseError` naming that row.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(source, f"offset {exc.start}", "CSV is not UTF-8") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ParseError(source, "header", f"malformed CSV: {exc}") from exc
    if not header:
        raise ParseError(source, "header", "empty CSV: no header")
    return header, _csv_rows(reader, source)


def _csv_rows(reader: Iterator[list[str]], source: str) -> Iterator[list[str]]:
    n = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ParseError(source, f"row {n + 1}", f"malformed CSV: {exc}") from exc
        n += 1
        yield row


def read_parquet(
    path_or_bytes: str | Path | bytes,
    source: str,
    wanted: Iterable[str],
    normalise: Callable[[str], str],
) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Header and rows of the ``wanted`` columns of a Parquet file.

    Only those columns are read, which keeps wide billing exports cheap.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    target: Any = path_or_bytes
    if isinstance(path_or_bytes, (bytes, bytearray)):
        target = pa.BufferReader(path_or_bytes)
    try:
        parquet = pq.ParquetFile(target)
        want = set(wanted)
        columns = [n for n in parquet.schema_arrow.names if normalise(n) in want]
        table = parquet.read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ParseError(source, "file", f"unreadable Parquet: {exc}") from exc
    data = [table.column(name).to_pylist() for name in columns]
    return columns, zip(*data, strict=True)
