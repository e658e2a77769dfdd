"""Tests of the CUR (legacy and 2.0) billing parser."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest.events import Billing, Context
from ingest.formats.cur import (
    looks_like_cur_header,
    normalise_column,
    parse_cur_csv,
    parse_cur_parquet,
    usage_kind,
)

SRC = "data/cur.csv"
ARN = "arn:aws:lambda:us-east-2:111122223333:function:resize"
T0 = datetime(2026, 3, 2, 10, tzinfo=UTC).timestamp()

LEGACY = [
    "identity/LineItemId",
    "lineItem/UsageAccountId",
    "lineItem/LineItemType",
    "lineItem/UsageStartDate",
    "lineItem/UsageEndDate",
    "lineItem/ProductCode",
    "lineItem/UsageType",
    "lineItem/Operation",
    "lineItem/ResourceId",
    "lineItem/UsageAmount",
    "lineItem/UnblendedCost",
    "product/region",
]
CUR2 = [normalise_column(name) for name in LEGACY]
CUR2[CUR2.index("product_region")] = "product_region_code"


def row(**overrides: Any) -> list[str]:
    values = {
        "id": "li-1",
        "account": "111122223333",
        "type": "Usage",
        "start": "2026-03-02T10:00:00Z",
        "end": "2026-03-02T11:00:00Z",
        "product": "AWSLambda",
        "usage": "USE2-Lambda-GB-Second-ARM",
        "op": "Invoke",
        "resource": ARN,
        "amount": "5821.4",
        "cost": "0.0776",
        "region": "us-east-2",
    }
    values.update(overrides)
    return list(values.values())


def to_csv(header: list[str], *rows: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def test_normalise_column_maps_legacy_names_to_snake_case() -> None:
    assert normalise_column("lineItem/UsageStartDate") == "line_item_usage_start_date"
    assert normalise_column("product/region") == "product_region"
    assert normalise_column("line_item_usage_type") == "line_item_usage_type"


@pytest.mark.parametrize(
    ("usage", "kind", "arch"),
    [
        ("USE2-Lambda-GB-Second-ARM", "gb_seconds", "arm64"),
        ("Lambda-GB-Second", "gb_seconds", "x86_64"),
        ("Request", "requests", "x86_64"),
        ("EUW2-Request-ARM", "requests", "arm64"),
        ("USE1-Lambda-Provisioned-Concurrency", "provisioned", "x86_64"),
        ("Lambda-Provisioned-GB-Second-ARM", "provisioned", "arm64"),
        ("APS1-Lambda-Storage-GB-Second", "storage", "x86_64"),
        ("USE1-DataTransfer-Out-Bytes", "other", "x86_64"),
    ],
)
def test_usage_kind_matches_the_suffix(usage: str, kind: str, arch: str) -> None:
    assert usage_kind(usage) == (kind, arch)


@pytest.mark.parametrize("header", [LEGACY, CUR2], ids=["legacy", "cur2"])
def test_lambda_usage_row_becomes_billing(header: list[str]) -> None:
    (event,) = parse_cur_csv(to_csv(header, row()), SRC)
    assert event == Billing(
        context=Context("aws", "111122223333", "us-east-2", "resize", "$LATEST"),
        time=T0,
        end=T0 + 3600,
        cost_usd=0.0776,
        usage_amount=5821.4,
        usage_kind="gb_seconds",
        source="cur",
        architecture="arm64",
    )


def test_rows_of_other_services_and_non_usage_items_are_skipped() -> None:
    raw = to_csv(
        LEGACY,
        row(product="AmazonS3", usage="USE2-Requests-Tier1"),
        row(type="Credit", cost="-0.5"),
        row(type="Tax"),
        row(type="SavingsPlanCoveredUsage", usage="Request", amount="1000"),
        row(type="DiscountedUsage", usage="Request-ARM", amount="7"),
    )
    events = parse_cur_csv(raw, SRC)
    assert [(e.usage_kind, e.usage_amount, e.architecture) for e in events] == [
        ("requests", 1000.0, "x86_64"),
        ("requests", 7.0, "arm64"),
    ]


def test_row_without_resource_id_is_attributed_to_the_account() -> None:
    (event,) = parse_cur_csv(to_csv(LEGACY, row(resource="")), SRC)
    assert event.context == Context("aws", "111122223333", "us-east-2", "", "")


def test_qualified_arn_keeps_its_qualifier() -> None:
    (event,) = parse_cur_csv(to_csv(LEGACY, row(resource=f"{ARN}:7")), SRC)
    assert event.context.qualifier == "7"


def test_time_interval_column_replaces_start_and_end() -> None:
    header = [c for c in CUR2 if c != "line_item_usage_end_date"]
    header.append("identity_time_interval")
    values = row()
    del values[4]
    values.append("2026-03-02T10:00:00Z/2026-03-02T12:00:00Z")
    (event,) = parse_cur_csv(to_csv(header, values), SRC)
    assert event.end - event.time == 7200


def test_bom_and_naive_timestamps_are_accepted() -> None:
    raw = b"\xef\xbb\xbf" + to_csv(
        CUR2, row(start="2026-03-02 10:00:00", end="2026-03-02T11:00:00.000Z")
    )
    (event,) = parse_cur_csv(raw, SRC)
    assert (event.time, event.end) == (T0, T0 + 3600)


def test_looks_like_cur_header() -> None:
    assert looks_like_cur_header(LEGACY)
    assert looks_like_cur_header(CUR2)
    assert not looks_like_cur_header(["ChargePeriodStart", "BilledCost"])


@pytest.mark.parametrize(
    ("overrides", "column"),
    [
        ({"amount": "lots"}, "line_item_usage_amount"),
        ({"amount": "-3"}, "line_item_usage_amount"),
        ({"amount": "nan"}, "line_item_usage_amount"),
        ({"cost": "inf"}, "line_item_unblended_cost"),
        ({"cost": "1e300"}, "line_item_unblended_cost"),
        ({"start": "yesterday"}, "line_item_usage_start_date"),
        ({"start": "9999-01-01T00:00:00Z"}, "line_item_usage_start_date"),
        ({"end": "2026-03-02T09:00:00Z"}, "line_item_usage_end_date"),
    ],
)
def test_bad_rows_name_row_and_column(overrides: dict[str, str], column: str) -> None:
    raw = to_csv(LEGACY, row(), row(**overrides))
    with pytest.raises(ParseError) as info:
        parse_cur_csv(raw, SRC)
    assert info.value.source == SRC
    assert info.value.position == f"row 2 column {column}"


def test_bad_rows_go_to_on_error_and_good_rows_stay() -> None:
    errors: list[ParseError] = []
    raw = to_csv(LEGACY, row(amount="x"), row(), row()[:3], row(cost="-1"))
    events = parse_cur_csv(raw, SRC, on_error=errors.append)
    assert len(events) == 1
    assert [e.position.split(" column")[0] for e in errors] == [
        "row 1",
        "row 3",
        "row 4",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"just,some,columns\n1,2,3\n",
        to_csv(LEGACY[:5], row()[:5]),
        b'lineItem/ProductCode,lineItem/UsageType\n"unterminated',
    ],
)
def test_unusable_files_raise_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_cur_csv(raw, SRC)
    assert info.value.source == SRC


def _parquet_table(rows: list[list[str]], header: list[str]) -> pa.Table:
    columns: dict[str, Any] = {
        name: [r[i] for r in rows] for i, name in enumerate(header)
    }
    for name in ("line_item_usage_start_date", "line_item_usage_end_date"):
        columns[name] = pa.array(
            [datetime.fromisoformat(v) for v in columns[name]],
            pa.timestamp("ms", tz="UTC"),
        )
    for name in ("line_item_usage_amount", "line_item_unblended_cost"):
        columns[name] = pa.array([float(v) for v in columns[name]], pa.float64())
    columns["resource_tags"] = [[("user_team", "media")]] * len(rows)
    return pa.table(columns)


def test_parquet_file_with_typed_columns(tmp_path: Path) -> None:
    table = _parquet_table([row(), row(product="AmazonEC2")], CUR2)
    path = tmp_path / "cur.parquet"
    pq.write_table(table, path)
    (event,) = parse_cur_parquet(path, str(path))
    assert event.time == T0
    assert event.cost_usd == 0.0776
    assert event.context.function == "resize"


def test_parquet_bytes_and_timestamp_strings() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({n: [v] for n, v in zip(CUR2, row(), strict=True)}), sink)
    (event,) = parse_cur_parquet(sink.getvalue(), SRC)
    assert (event.time, event.usage_amount) == (T0, 5821.4)


def test_parquet_with_negative_amount_reports_the_row() -> None:
    sink = io.BytesIO()
    pq.write_table(_parquet_table([row(), row(amount="-1")], CUR2), sink)
    errors: list[ParseError] = []
    events = parse_cur_parquet(sink.getvalue(), SRC, on_error=errors.append)
    assert len(events) == 1
    assert errors[0].position == "row 2 column line_item_usage_amount"


def test_broken_parquet_raises_parse_error(tmp_path: Path) -> None:
    sink = io.BytesIO()
    pq.write_table(_parquet_table([row()], CUR2), sink)
    with pytest.raises(ParseError, match="unreadable Parquet"):
        parse_cur_parquet(sink.getvalue()[:-40], SRC)
    with pytest.raises(ParseError, match="unreadable Parquet"):
        parse_cur_parquet(tmp_path / "missing.parquet", SRC)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.text(max_size=12), min_size=len(LEGACY), max_size=len(LEGACY)),
        max_size=4,
    )
)
def test_arbitrary_cells_give_billing_or_parse_error(cells: list[list[str]]) -> None:
    # Product and line item type fixed, so that every row reaches the checks.
    rows = [[*c[:2], "Usage", *c[3:5], "AWSLambda", *c[6:]] for c in cells]
    try:
        events = parse_cur_csv(to_csv(LEGACY, *rows), SRC)
    except ParseError:
        return
    assert all(e.cost_usd >= 0 and e.end >= e.time for e in events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_billing_or_parse_error(raw: bytes) -> None:
    try:
        events = parse_cur_csv(raw, SRC)
    except ParseError:
        return
    assert all(isinstance(e, Billing) for e in events)
