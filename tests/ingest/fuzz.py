"""What the parsers' property tests share: arbitrary JSON and the output checks.

Every parser may refuse input only with a ParseError; what it accepts must
be events that survive dowguard's own encoding unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest.events import decode_event, encode_event

T = TypeVar("T")

#: Any JSON value, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def parsed(parse: Callable[..., T], *args: Any) -> T | None:
    """What ``parse(*args)`` returns, or None if it refused with a ParseError."""
    try:
        return parse(*args)
    except ParseError:
        return None


def check_events(events: Iterable[Any], *kinds: type) -> None:
    """Each event is one of ``kinds`` and survives encoding and decoding."""
    for event in events:
        assert isinstance(event, kinds)
        assert decode_event(encode_event(event), "roundtrip") == event
