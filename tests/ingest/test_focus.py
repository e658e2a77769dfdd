"""Tests of the FOCUS billing parser."""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest.events import Billing, Context
from ingest.formats.focus import (
    looks_like_focus_header,
    looks_like_focus_record,
    parse_focus_csv,
    parse_focus_jsonl,
    parse_focus_parquet,
    parse_focus_record,
)

SRC = "exports/focus.csv"
ARN = "arn:aws:lambda:us-east-1:111122223333:function:resize"
T0 = datetime(2026, 3, 2, 10, tzinfo=UTC).timestamp()


def record(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "BillingAccountId": "999988887777",
        "SubAccountId": "111122223333",
        "ChargePeriodStart": "2026-03-02T10:00:00Z",
        "ChargePeriodEnd": "2026-03-02T11:00:00Z",
        "ChargeCategory": "Usage",
        "ChargeClass": "",
        "ServiceName": "AWS Lambda",
        "ProviderName": "AWS",
        "ResourceId": ARN,
        "ResourceName": "resize",
        "ResourceType": "Function",
        "RegionId": "us-east-1",
        "ConsumedQuantity": "5821.4",
        "ConsumedUnit": "Lambda-GB-Second",
        "PricingUnit": "GB-Seconds",
        "SkuId": "ABC123",
        "BilledCost": "0.0776",
        "BillingCurrency": "USD",
    }
    row.update(overrides)
    return row


def to_csv(*records: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode()


def to_jsonl(*records: dict[str, Any]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


EXPECTED = Billing(
    context=Context("aws", "111122223333", "us-east-1", "resize", "$LATEST"),
    time=T0,
    end=T0 + 3600,
    cost_usd=0.0776,
    usage_amount=5821.4,
    usage_kind="gb_seconds",
    source="focus",
)


def test_lambda_row_from_csv() -> None:
    assert parse_focus_csv(to_csv(record()), SRC) == [EXPECTED]


def test_lambda_row_from_jsonl_with_numbers() -> None:
    raw = to_jsonl(record(BilledCost=0.0776, ConsumedQuantity=5821.4))
    assert parse_focus_jsonl(b"\n" + raw + b"\n\n", SRC) == [EXPECTED]


def test_lambda_row_from_parquet_with_typed_columns(tmp_path: Path) -> None:
    s3 = record(ServiceName="Amazon S3", ResourceId="arn:aws:s3:::b", ResourceType="")
    rows = [record(), s3]
    columns: dict[str, Any] = {name: [r[name] for r in rows] for name in rows[0]}
    for name in ("ChargePeriodStart", "ChargePeriodEnd"):
        columns[name] = pa.array(
            [datetime.fromisoformat(v) for v in columns[name]],
            pa.timestamp("us", tz="UTC"),
        )
    columns["BilledCost"] = pa.array(
        [Decimal(v) for v in columns["BilledCost"]], pa.decimal128(20, 10)
    )
    columns["Tags"] = ['{"team": "media"}'] * len(rows)
    path = tmp_path / "focus.parquet"
    pq.write_table(pa.table(columns), path)
    assert parse_focus_parquet(path, str(path)) == [EXPECTED]


@pytest.mark.parametrize(
    ("overrides", "kind", "arch"),
    [
        ({"ConsumedUnit": "Requests", "PricingUnit": "Requests"}, "requests", "x86_64"),
        ({"x_UsageType": "USE1-Request-ARM"}, "requests", "arm64"),
        ({"x_UsageType": "Lambda-Provisioned-GB-Second"}, "provisioned", "x86_64"),
        (
            {"ConsumedUnit": "GB-Seconds", "SkuId": "Lambda-Storage-GB-Second"},
            "storage",
            "x86_64",
        ),
        ({"SkuId": "lambda-gb-second-arm"}, "gb_seconds", "arm64"),
        ({"ConsumedUnit": "", "PricingUnit": "", "SkuId": "X"}, "other", "x86_64"),
    ],
)
def test_usage_kind_heuristics(overrides: dict[str, str], kind: str, arch: str) -> None:
    (event,) = parse_focus_jsonl(to_jsonl(record(**overrides)), SRC)
    assert (event.usage_kind, event.architecture) == (kind, arch)


def test_azure_and_gcp_function_rows() -> None:
    azure = record(
        ServiceName="Azure Functions",
        ProviderName="Microsoft",
        SubAccountId="sub-1",
        RegionId="westeurope",
        ResourceId="/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Web/sites/thumbs",
        ResourceName="thumbs",
        ConsumedUnit="GB Seconds",
        PricingUnit="",
    )
    gcp = record(
        ServiceName="Cloud Run Functions",
        ProviderName="Google Cloud",
        SubAccountId="proj-1",
        RegionId="europe-west1",
        ResourceId="//cloudfunctions.googleapis.com/projects/proj-1/functions/ocr",
        ResourceName="ocr",
        ConsumedUnit="Invocations",
        PricingUnit="",
    )
    events = parse_focus_jsonl(to_jsonl(azure, gcp), SRC)
    assert [(e.context, e.usage_kind) for e in events] == [
        (Context("azure", "sub-1", "westeurope", "thumbs", ""), "gb_seconds"),
        (Context("gcp", "proj-1", "europe-west1", "ocr", ""), "requests"),
    ]


def test_function_found_by_resource_type_or_arn() -> None:
    by_type = record(ServiceName="Compute", ResourceType="Lambda Function")
    by_arn = record(ServiceName="", ResourceType="")
    events = parse_focus_jsonl(to_jsonl(by_type, by_arn), SRC)
    assert [e.context.function for e in events] == ["resize", "resize"]


def test_non_function_and_non_usage_rows_are_skipped() -> None:
    raw = to_jsonl(
        record(ServiceName="Amazon S3", ResourceId="b", ResourceType="Bucket"),
        record(ChargeCategory="Credit", BilledCost="0"),
        record(ChargeCategory="Tax"),
        record(ChargeClass="Correction"),
    )
    assert parse_focus_jsonl(raw, SRC) == []


def test_non_usd_rows_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.formats.focus")
    raw = to_csv(record(BillingCurrency="EUR"), record())
    assert parse_focus_csv(raw, SRC) == [EXPECTED]
    assert "reason=currency" in caplog.text
    assert "rows=1" in caplog.text


def test_headers_and_records_are_recognised() -> None:
    assert looks_like_focus_header(list(record()))
    assert not looks_like_focus_header(["lineItem/UsageType", "BilledCost"])
    assert looks_like_focus_record(record())
    assert not looks_like_focus_record({"BilledCost": 1})


def test_parse_focus_record_of_one_decoded_row() -> None:
    assert parse_focus_record(record(), SRC, "offset 0") == [EXPECTED]
    assert parse_focus_record(record(ChargeCategory="Tax"), SRC, "offset 0") == []


@pytest.mark.parametrize(
    ("overrides", "column"),
    [
        ({"BilledCost": "-1"}, "BilledCost"),
        ({"BilledCost": "NaN"}, "BilledCost"),
        ({"BilledCost": True}, "BilledCost"),
        ({"ConsumedQuantity": "1e400"}, "ConsumedQuantity"),
        ({"ConsumedQuantity": [1]}, "ConsumedQuantity"),
        ({"ChargePeriodStart": 17}, "ChargePeriodStart"),
        ({"ChargePeriodStart": None}, "ChargePeriodStart"),
        ({"ChargePeriodEnd": "2026-03-02T09:00:00Z"}, "ChargePeriodEnd"),
        ({"BillingCurrency": ""}, "BillingCurrency"),
    ],
)
def test_bad_rows_name_line_and_column(overrides: dict[str, Any], column: str) -> None:
    errors: list[ParseError] = []
    raw = to_jsonl(record(), record(**overrides))
    assert parse_focus_jsonl(raw, SRC, on_error=errors.append) == [EXPECTED]
    assert [e.position for e in errors] == [f"line 2 column {column}"]
    with pytest.raises(ParseError) as info:
        parse_focus_jsonl(raw, SRC)
    assert str(info.value).startswith(f"{SRC} at line 2 column {column}")


def test_broken_json_lines_are_reported_per_line() -> None:
    errors: list[ParseError] = []
    raw = b"{not json\n[1, 2]\n" + to_jsonl(record())
    assert parse_focus_jsonl(raw, SRC, on_error=errors.append) == [EXPECTED]
    assert [e.position for e in errors] == ["line 1", "line 2"]


def test_csv_without_required_columns_is_refused() -> None:
    with pytest.raises(ParseError, match="FOCUS columns missing"):
        parse_focus_csv(b"ServiceName,BilledCost\nAWS Lambda,1\n", SRC)


def test_short_csv_row_is_reported() -> None:
    errors: list[ParseError] = []
    raw = to_csv(record()) + b"AWS Lambda,1\n"
    assert parse_focus_csv(raw, SRC, on_error=errors.append) == [EXPECTED]
    assert errors[0].position == "row 2"


def test_truncated_parquet_is_refused() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({k: [v] for k, v in record().items()}), sink)
    assert len(parse_focus_parquet(sink.getvalue(), SRC)) == 1
    with pytest.raises(ParseError, match="unreadable Parquet"):
        parse_focus_parquet(sink.getvalue()[: len(sink.getvalue()) // 2], SRC)


_cells = st.none() | st.booleans() | st.floats() | st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(record())), _cells, max_size=8))
def test_arbitrary_cells_give_billing_or_parse_error(cells: dict[str, Any]) -> None:
    try:
        events = parse_focus_record(record(**cells), SRC, "offset 0")
    except ParseError:
        return
    assert all(e.cost_usd >= 0 and e.end >= e.time for e in events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_billing_or_parse_error(raw: bytes) -> None:
    for parse in (parse_focus_csv, parse_focus_jsonl):
        try:
            events = parse(raw, SRC)
        except ParseError:
            continue
        assert all(isinstance(e, Billing) for e in events)
