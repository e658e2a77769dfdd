"""The field checks every parser shares: epoch-millisecond stamps, context parts."""

from __future__ import annotations

import pytest

from dowguard.errors import ParseError
from ingest.formats.common import MAX_TIMESTAMP_MS, context_part, epoch_millis

SOURCE = "topic/0@3"


def test_epoch_millis_turns_milliseconds_into_seconds() -> None:
    seconds = epoch_millis({"timestamp": 1_700_000_000_250}, SOURCE, "x")
    assert seconds == 1_700_000_000.25


@pytest.mark.parametrize(
    "stamp", [None, "1700000000000", True, -1, MAX_TIMESTAMP_MS + 1, [1]]
)
def test_epoch_millis_refuses_what_is_not_a_plausible_stamp(stamp: object) -> None:
    with pytest.raises(ParseError) as caught:
        epoch_millis({"timestamp": stamp}, SOURCE, "records[2]")
    assert caught.value.source == SOURCE
    assert caught.value.position == "records[2]"
    assert "timestamp must be epoch milliseconds" in str(caught.value)


def test_epoch_millis_names_the_field_it_read() -> None:
    with pytest.raises(ParseError, match="sentAt must be epoch milliseconds"):
        epoch_millis({}, SOURCE, "x", name="sentAt")


def test_context_part_passes_a_plain_name() -> None:
    assert context_part("resize", "function", SOURCE, "x") == "resize"


@pytest.mark.parametrize("value", ["", "a/b", None, 7])
def test_context_part_refuses_what_would_break_the_key(value: object) -> None:
    with pytest.raises(ParseError, match="owner must be non-empty") as caught:
        context_part(value, "owner", SOURCE, "owner")
    assert caught.value.position == "owner"
