"""The AWS X-Ray trace header (``Root=…;Parent=…;Sampled=…;Lineage=…``).

Parsing is lenient on purpose: the header travels through queues, logs and
SDKs that add, drop or mangle fields, and Lambda's ``Lineage`` field is
undocumented. Nothing here raises; what cannot be read is left empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The prefix a header carries when it is copied with its HTTP name.
_HEADER_NAME = "x-amzn-trace-id:"

#: A trace header that carries more Lineage entries than this is not one
#: that Lambda wrote; the rest are ignored so per-event work stays bounded.
MAX_LINEAGE_ENTRIES = 64

_XRAY_ROOT = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_OTEL_ID = re.compile(r"[0-9a-fA-F]{32}")
_PARENT = re.compile(r"[0-9a-fA-F]{16}")
# Counters are short; the digit bound also keeps int() away from huge inputs.
_LINEAGE_ENTRY = re.compile(r"(?:[0-9]{1,4}:)?([0-9A-Za-z]{1,64}):([0-9]{1,9})")


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """What could be read from one header.

    ``root`` is the trace id in OpenTelemetry form (32 lowercase hex), ""
    when absent or unreadable; ``parent`` is 16 lowercase hex or "";
    ``sampled`` is None when the header leaves the decision open.
    ``lineage`` holds ``(hash, counter)`` pairs and ``lineage_max`` the
    highest counter among them (0 without Lineage).
    """

    root: str = ""
    parent: str = ""
    sampled: bool | None = None
    lineage: tuple[tuple[str, int], ...] = ()
    lineage_max: int = 0


def xray_to_otel_trace_id(text: str) -> str:
    """``1-5759e988-bd862e3fe1be46a994272793`` -> 32 lowercase hex, or "".

    A value that already is 32 hex characters is accepted as it is.
    """
    text = text.strip()
    match = _XRAY_ROOT.fullmatch(text)
    if match is not None:
        return (match.group(1) + match.group(2)).lower()
    if _OTEL_ID.fullmatch(text) is not None:
        return text.lower()
    return ""


def parse_lineage(text: str) -> tuple[tuple[str, int], ...]:
    """Entries of a ``Lineage`` value; malformed entries are skipped.

    Accepts ``hash:counter`` and the version-prefixed ``1:hash:counter``,
    several joined by ``|``.
    """
    entries: list[tuple[str, int]] = []
    for part in text.split("|", MAX_LINEAGE_ENTRIES)[:MAX_LINEAGE_ENTRIES]:
        match = _LINEAGE_ENTRY.fullmatch(part.strip())
        if match is not None:
            entries.append((match.group(1).lower(), int(match.group(2))))
    return tuple(entries)


def parse_trace_header(text: str) -> TraceHeader:
    """Read a trace header; unknown keys and malformed values are ignored.

    An optional ``X-Amzn-Trace-Id:`` prefix is accepted. Input that is not a
    header at all gives an empty :class:`TraceHeader` rather than an error,
    because the header is evidence, never a reason to reject an event.
    """
    if not isinstance(text, str):
        return TraceHeader()
    text = text.strip()
    if text[: len(_HEADER_NAME)].lower() == _HEADER_NAME:
        text = text[len(_HEADER_NAME) :]
    root = parent = ""
    sampled: bool | None = None
    lineage: tuple[tuple[str, int], ...] = ()
    for field in text.split(";"):
        name, sep, value = field.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        value = value.strip()
        if name == "root":
            root = xray_to_otel_trace_id(value)
        elif name == "parent":
            parent = value.lower() if _PARENT.fullmatch(value) else ""
        elif name == "sampled":
            sampled = True if value == "1" else False if value == "0" else None
        elif name == "lineage":
            lineage = parse_lineage(value)
    lineage_max = max((counter for _, counter in lineage), default=0)
    return TraceHeader(root, parent, sampled, lineage, lineage_max)
