"""Tests of the X-Ray trace header parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.formats.xray import (
    MAX_LINEAGE_ENTRIES,
    TraceHeader,
    parse_lineage,
    parse_trace_header,
    xray_to_otel_trace_id,
)

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
OTEL = "5759e988bd862e3fe1be46a994272793"


def test_xray_to_otel_trace_id_joins_the_hex_parts() -> None:
    assert xray_to_otel_trace_id(ROOT) == OTEL


def test_xray_to_otel_trace_id_lowercases_and_accepts_otel_form() -> None:
    assert xray_to_otel_trace_id(ROOT.upper()) == OTEL
    assert xray_to_otel_trace_id(OTEL.upper()) == OTEL


def test_xray_to_otel_trace_id_rejects_malformed_ids() -> None:
    for bad in (
        "",
        "1-5759e988",
        "2-5759e988-bd862e3fe1be46a994272793",
        "1-5759e98-bd862e3fe1be46a9942727930",
        OTEL[:-1] + "z",
    ):
        assert xray_to_otel_trace_id(bad) == ""


def test_parse_full_header_with_prefix() -> None:
    header = parse_trace_header(
        f"X-Amzn-Trace-Id: Root={ROOT};Parent=53995C3F42CD8AD8;Sampled=1"
    )
    assert header == TraceHeader(OTEL, "53995c3f42cd8ad8", True, (), 0)


def test_parse_root_only_passthrough_header() -> None:
    header = parse_trace_header(f"Root={ROOT}")
    assert header.root == OTEL
    assert header.parent == ""
    assert header.sampled is None


def test_sampled_values() -> None:
    assert parse_trace_header("Root=x;Sampled=0").sampled is False
    assert parse_trace_header("Sampled=?").sampled is None
    assert parse_trace_header("Sampled=yes").sampled is None


def test_single_lineage_entry() -> None:
    header = parse_trace_header(f"Root={ROOT};Lineage=8408dcb0:0")
    assert header.lineage == (("8408dcb0", 0),)
    assert header.lineage_max == 0


def test_piped_lineage_entries_give_the_highest_counter() -> None:
    header = parse_trace_header(
        f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1;"
        "Lineage=a87bd80c:1|68fd508a:5|c512fbe3:2"
    )
    assert header.lineage == (("a87bd80c", 1), ("68fd508a", 5), ("c512fbe3", 2))
    assert header.lineage_max == 5


def test_version_prefixed_lineage() -> None:
    assert parse_lineage("1:fe460cdd:0") == (("fe460cdd", 0),)
    assert parse_trace_header("Lineage=1:fe460cdd:12").lineage_max == 12


def test_malformed_lineage_entries_are_skipped() -> None:
    entries = parse_lineage("a87bd80c:x|:3|ok12:4|zz:99999999999|  b:2  |a:b:c")
    assert entries == (("ok12", 4), ("b", 2))


def test_lineage_entries_are_bounded() -> None:
    text = "|".join(f"h{i}:{i}" for i in range(MAX_LINEAGE_ENTRIES * 3))
    entries = parse_lineage(text)
    assert len(entries) == MAX_LINEAGE_ENTRIES
    assert entries[-1] == (f"h{MAX_LINEAGE_ENTRIES - 1}", MAX_LINEAGE_ENTRIES - 1)


def test_unknown_keys_and_junk_are_ignored() -> None:
    header = parse_trace_header(
        f" Self=1-67891233-abcdef012345678912345678 ; Root={ROOT} ;junk;;=;"
        "Parent=nothex0000000000"
    )
    assert header.root == OTEL
    assert header.parent == ""


def test_text_that_is_no_header_gives_an_empty_header() -> None:
    assert parse_trace_header("hello world") == TraceHeader()
    assert parse_trace_header("") == TraceHeader()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_trace_header_never_raises(text: str) -> None:
    header = parse_trace_header(text)
    assert header.lineage_max == max((c for _, c in header.lineage), default=0)
    assert header.root == "" or len(header.root) == 32
