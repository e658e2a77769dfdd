"""Tests of the OTLP/JSON trace parser."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest.events import SPAN_KIND_CONSUMER, SPAN_KIND_SERVER, Context, Span
from ingest.formats.otlp import decode_value, looks_like_otlp, parse_otlp

TRACE = "5759e988bd862e3fe1be46a994272793"
SPAN = "53995c3f42cd8ad8"
PARENT = "0102030405060708"
ARN = "arn:aws:lambda:us-east-1:111122223333:function:resize"
SRC = "traces/0/12"


def s(value: str) -> dict[str, Any]:
    return {"stringValue": value}


def attrs(**values: Any) -> list[dict[str, Any]]:
    """OTLP attributes from keyword names with "__" for "."."""
    out = []
    for key, value in values.items():
        if not isinstance(value, dict):
            value = s(value)
        out.append({"key": key.replace("__", "."), "value": value})
    return out


def span(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": SPAN,
        "name": "resize",
        "kind": 2,
        "startTimeUnixNano": "1772446507120000000",
        "endTimeUnixNano": "1772446507532000000",
    }
    base.update(fields)
    return base


def export(
    *spans: dict[str, Any], resource: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    if resource is None:
        resource = attrs(
            cloud__provider="aws",
            cloud__platform="aws_lambda",
            cloud__region="us-east-1",
            cloud__account__id="111122223333",
            faas__name="resize",
            faas__version="7",
            faas__max_memory={"intValue": "536870912"},
            service__name="resize",
        )
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource},
                "scopeSpans": [
                    {"scope": {"name": "test", "version": "1"}, "spans": list(spans)}
                ],
            }
        ]
    }


def one(doc: dict[str, Any]) -> Span:
    (result,) = parse_otlp(orjson.dumps(doc), SRC)
    return result


def test_lambda_server_span_from_bytes() -> None:
    result = one(
        export(
            span(
                parentSpanId=PARENT,
                attributes=attrs(faas__trigger="http", faas__invocation_id="9b2e"),
            )
        )
    )
    assert result.context == Context("aws", "111122223333", "us-east-1", "resize", "7")
    assert result.trace_id == TRACE
    assert result.span_id == SPAN
    assert result.parent_id == PARENT
    assert result.kind == SPAN_KIND_SERVER
    assert result.time == pytest.approx(1772446507.12)
    assert result.end == pytest.approx(1772446507.532)
    assert result.trigger == "http"
    assert result.invocation_id == "9b2e"
    assert result.memory_mb == 512
    assert result.error is False


def test_dict_input_and_numeric_times_are_accepted() -> None:
    doc = export(span(startTimeUnixNano=1_000_000_000, endTimeUnixNano=3.5e9))
    (result,) = parse_otlp(doc, SRC)
    assert (result.time, result.end) == (1.0, 3.5)


def test_base64_ids_are_normalised_to_hex() -> None:
    trace_b64 = base64.b64encode(bytes.fromhex(TRACE)).decode()
    span_b64 = base64.urlsafe_b64encode(bytes.fromhex(SPAN)).decode().rstrip("=")
    link = {"traceId": trace_b64, "spanId": base64.b64encode(b"\x01" * 8).decode()}
    result = one(export(span(traceId=trace_b64, spanId=span_b64, links=[link])))
    assert result.trace_id == TRACE
    assert result.span_id == SPAN
    assert result.links == ((TRACE, "01" * 8),)


def test_uppercase_hex_ids_are_lowercased() -> None:
    result = one(export(span(traceId=TRACE.upper(), spanId=SPAN.upper())))
    assert (result.trace_id, result.span_id) == (TRACE, SPAN)


def test_span_resource_id_overrides_resource_context() -> None:
    result = one(
        export(
            span(
                attributes=attrs(
                    cloud__resource_id=f"{ARN.replace('resize', 'thumb')}:9"
                )
            )
        )
    )
    assert result.context == Context("aws", "111122223333", "us-east-1", "thumb", "9")


def test_resource_id_arn_without_qualifier_takes_faas_version() -> None:
    resource = attrs(cloud__resource_id=ARN, faas__version="3")
    result = one(export(span(), resource=resource))
    assert result.context == Context("aws", "111122223333", "us-east-1", "resize", "3")


def test_invoked_arn_alias_is_the_qualifier_without_resource_id() -> None:
    resource = attrs(aws__lambda__invoked_arn=f"{ARN}:prod")
    result = one(export(span(), resource=resource))
    assert result.context.qualifier == "prod"


def test_aws_lambda_platform_defaults_provider_and_qualifier() -> None:
    resource = attrs(cloud__platform="aws_lambda", faas__name="resize")
    result = one(export(span(), resource=resource))
    assert result.context == Context("aws", "", "", "resize", "$LATEST")


def test_non_faas_service_is_named_by_service_name() -> None:
    result = one(export(span(), resource=attrs(service__name="checkout")))
    assert result.context == Context("otel", "", "", "checkout", "")
    result = one(export(span(), resource=[]))
    assert result.context.function == "unknown_service"


def test_azure_function_context() -> None:
    resource = attrs(cloud__platform="azure_functions", faas__name="thumbs")
    assert one(export(span(), resource=resource)).context == Context(
        "azure", "", "", "thumbs", ""
    )


def test_sqs_consumer_span_with_links_and_lineage() -> None:
    header = (
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;"
        "Sampled=1;Lineage=a87bd80c:1|68fd508a:5"
    )
    link = {
        "traceId": "a" * 32,
        "spanId": "b" * 16,
        "attributes": attrs(AWSTraceHeader=header),
    }
    result = one(
        export(
            span(
                kind="SPAN_KIND_CONSUMER",
                name="jobs process",
                links=[link],
                attributes=attrs(
                    faas__trigger="pubsub",
                    messaging__system="aws_sqs",
                    messaging__destination__name="jobs",
                ),
            )
        )
    )
    assert result.kind == SPAN_KIND_CONSUMER
    assert result.messaging_system == "aws_sqs"
    assert result.destination == "jobs"
    assert result.links == (("a" * 32, "b" * 16),)
    assert result.lineage == 5


def test_lineage_from_span_trace_header_attribute() -> None:
    result = one(
        export(span(attributes=attrs(aws__xray__trace_header="Lineage=1:fe460cdd:9")))
    )
    assert result.lineage == 9


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "aws.sns.topic.arn",
            s("arn:aws:sns:us-east-1:1:t"),
            "arn:aws:sns:us-east-1:1:t",
        ),
        ("aws.s3.bucket", s("uploads"), "uploads"),
        (
            "aws.dynamodb.table_names",
            {"arrayValue": {"values": [s("orders"), s("items")]}},
            "orders",
        ),
        ("aws.kinesis.stream_name", s("clicks"), "clicks"),
    ],
)
def test_destination_attributes(key: str, value: Any, expected: str) -> None:
    result = one(export(span(attributes=[{"key": key, "value": value}])))
    assert result.destination == expected


def test_client_span_that_invokes_a_function() -> None:
    result = one(export(span(kind=3, attributes=attrs(faas__invoked_name="thumb"))))
    assert result.invoked == "thumb"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (s("x"), "x"),
        ({"boolValue": True}, True),
        ({"intValue": 7}, 7),
        ({"intValue": "-9"}, -9),
        ({"doubleValue": 1.5}, 1.5),
        ({"doubleValue": 2}, 2.0),
        ({"doubleValue": "-Infinity"}, -math.inf),
        ({"bytesValue": base64.b64encode(b"\x00\x01").decode()}, b"\x00\x01"),
        ({"arrayValue": {"values": [s("p"), {"intValue": 1}]}}, ["p", 1]),
        ({"arrayValue": {}}, []),
        (
            {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}},
            {"k": False},
        ),
        ({}, None),
    ],
)
def test_every_attribute_value_kind_is_decoded(value: Any, expected: Any) -> None:
    decoded = decode_value(value, SRC, "attr")
    assert decoded == expected
    assert type(decoded) is type(expected)


def test_double_nan_is_decoded() -> None:
    assert math.isnan(decode_value({"doubleValue": "NaN"}, SRC, "attr"))


def test_memory_accepts_int_and_double_kinds() -> None:
    for value in ({"doubleValue": 2.0 * 2**20}, {"intValue": str(2**21)}):
        doc = export(span(attributes=[{"key": "faas.max_memory", "value": value}]))
        assert one(doc).memory_mb == 2


def test_status_error_and_end_before_start() -> None:
    result = one(
        export(
            span(
                status={"code": 2, "message": "boom"},
                endTimeUnixNano="1772446500000000000",
            )
        )
    )
    assert result.error is True
    assert result.end == result.time
    assert one(export(span(status={"code": "STATUS_CODE_OK"}))).error is False


def test_several_resources_and_scopes() -> None:
    doc = export(span(), span(spanId="1" * 16))
    doc["resourceSpans"].append(
        {
            "resource": {"attributes": attrs(service__name="b")},
            "scopeSpans": [{"spans": [span(spanId="2" * 16)]}, {"spans": []}],
        }
    )
    result = parse_otlp(doc, SRC)
    assert [r.span_id for r in result] == [SPAN, "1" * 16, "2" * 16]
    assert result[2].context.function == "b"


def test_empty_export_gives_no_spans() -> None:
    assert parse_otlp(b'{"resourceSpans": []}', SRC) == []


def test_looks_like_otlp() -> None:
    assert looks_like_otlp(export(span()))
    assert not looks_like_otlp({"resourceSpans": {}})
    assert not looks_like_otlp([{"resourceSpans": []}])


POS = "resourceSpans[0].scopeSpans[0].spans[0]"


@pytest.mark.parametrize(
    ("fields", "position"),
    [
        ({"traceId": TRACE[:-2]}, f"{POS}.traceId"),
        ({"traceId": "0" * 32}, f"{POS}.traceId"),
        ({"spanId": "!!notbase64!!"}, f"{POS}.spanId"),
        ({"spanId": base64.b64encode(b"123").decode()}, f"{POS}.spanId"),
        ({"spanId": 12}, f"{POS}.spanId"),
        ({"parentSpanId": "abc"}, f"{POS}.parentSpanId"),
        ({"startTimeUnixNano": -5}, f"{POS}.startTimeUnixNano"),
        ({"startTimeUnixNano": "-5"}, f"{POS}.startTimeUnixNano"),
        ({"startTimeUnixNano": "12e4"}, f"{POS}.startTimeUnixNano"),
        ({"startTimeUnixNano": math.nan}, f"{POS}.startTimeUnixNano"),
        ({"endTimeUnixNano": "99999999999999999999"}, f"{POS}.endTimeUnixNano"),
        ({"endTimeUnixNano": True}, f"{POS}.endTimeUnixNano"),
        ({"kind": 9}, f"{POS}.kind"),
        ({"kind": "SERVER"}, f"{POS}.kind"),
        ({"name": 3}, f"{POS}.name"),
        ({"status": {"code": 7}}, f"{POS}.status.code"),
        ({"links": {}}, f"{POS}.links"),
        ({"links": [{"traceId": TRACE}]}, f"{POS}.links[0].spanId"),
        ({"attributes": [{"value": s("x")}]}, f"{POS}.attributes[0]"),
        ({"attributes": attrs(faas__trigger={"intValue": 1})}, "[faas.trigger]"),
        ({"attributes": attrs(faas__trigger={"boolValue": "yes"})}, "[faas.trigger]"),
        ({"attributes": attrs(faas__max_memory={"intValue": -1})}, "[faas.max_memory]"),
        ({"attributes": attrs(faas__trigger={"weirdValue": 1})}, "[faas.trigger]"),
        ({"attributes": attrs(faas__trigger={"intValue": "1" * 30})}, "[faas.trigger]"),
        (
            {"attributes": attrs(aws__s3__bucket={"bytesValue": "%%%"})},
            "[aws.s3.bucket]",
        ),
    ],
)
def test_bad_spans_name_their_position(fields: dict[str, Any], position: str) -> None:
    doc = export(span(**fields))
    with pytest.raises(ParseError) as info:
        parse_otlp(doc, SRC)
    assert info.value.source == SRC
    assert position in info.value.position
    assert str(info.value).startswith(f"{SRC} at {POS}")


def test_missing_times_and_ids_are_errors() -> None:
    for field in ("traceId", "spanId", "startTimeUnixNano", "endTimeUnixNano"):
        doc = export(span())
        del doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0][field]
        with pytest.raises(ParseError, match=field):
            parse_otlp(doc, SRC)


def test_deeply_nested_attribute_value_is_refused() -> None:
    value: dict[str, Any] = s("leaf")
    for _ in range(40):
        value = {"arrayValue": {"values": [value]}}
    doc = export(span(attributes=[{"key": "aws.s3.bucket", "value": value}]))
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_otlp(doc, SRC)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[]",
        b'{"resourceSpans": 3}',
        b'{"resourceSpans": [3]}',
        b'{"resourceSpans": [{"scopeSpans": {}}]}',
        b'{"resourceSpans": [{"resource": []}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [1]}]}]}',
    ],
)
def test_malformed_exports_raise_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_otlp(raw, SRC)
    assert info.value.source == SRC


def test_oversized_export_is_refused() -> None:
    with pytest.raises(ParseError, match="exceeds"):
        parse_otlp(b" " * (9 * 1024 * 1024), SRC)


def _json_values() -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=40)
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "traceId",
                        "spanId",
                        "kind",
                        "attributes",
                        "key",
                        "value",
                        "stringValue",
                        "intValue",
                        "arrayValue",
                        "values",
                        "links",
                        "startTimeUnixNano",
                        "endTimeUnixNano",
                        "status",
                        "code",
                    ]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=20,
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_spans_or_parse_error(raw: bytes) -> None:
    try:
        result = parse_otlp(raw, SRC)
    except ParseError:
        return
    assert all(isinstance(r, Span) for r in result)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_json_values(), max_size=3),
    st.lists(_json_values(), max_size=3),
)
def test_arbitrary_span_shapes_give_spans_or_parse_error(
    spans: list[Any], resource: list[Any]
) -> None:
    doc = {
        "resourceSpans": [
            {"resource": {"attributes": resource}, "scopeSpans": [{"spans": spans}]}
        ]
    }
    try:
        result = parse_otlp(doc, SRC)
    except ParseError:
        return
    assert all(isinstance(r, Span) for r in result)
