"""Guards shared by every parser: size limits, safe decompression, safe JSON,
checked field values, and short renderings of bad input for error messages.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import orjson

from dowguard.errors import ParseError

#: Largest message or file chunk accepted before any decoding.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Largest output of one decompression: beyond it the input is a bomb.
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024

GZIP_MAGIC = b"\x1f\x8b"

#: Event times past this (2100-01-01 UTC) are input errors: one such event
#: would push a watermark so far ahead that every later event counts as late.
LATEST_EVENT_TIME_S = 4102444800.0
#: Latest plausible epoch-milliseconds stamp (year 2286), far below float trouble.
MAX_TIMESTAMP_MS = 10**13


def check_size(raw: bytes, source: str, limit: int = MAX_MESSAGE_BYTES) -> None:
    if len(raw) > limit:
        raise ParseError(
            source, "offset 0", f"message of {len(raw)} bytes exceeds {limit} bytes"
        )


def gunzip(raw: bytes, source: str, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress gzip data (all members), refusing output beyond ``limit``."""
    parts: list[bytes] = []
    size = 0
    rest = raw
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            offset = len(raw) - len(rest)
            raise ParseError(
                source, f"offset {offset}", f"bad gzip data: {exc}"
            ) from exc
        size += len(out)
        if size > limit or inflater.unconsumed_tail:
            raise ParseError(
                source, "offset 0", f"gzip data inflates beyond {limit} bytes"
            )
        if not inflater.eof:
            raise ParseError(source, f"offset {len(raw)}", "truncated gzip data")
        parts.append(out)
        rest = inflater.unused_data
    return b"".join(parts)


def b64decode(text: str | bytes, source: str, position: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ParseError(source, position, f"invalid base64: {exc}") from exc


def load_json(raw: bytes | str, source: str, position: str = "offset 0") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(source, position, f"invalid JSON: {exc}") from exc


def brief(value: object) -> str:
    """A short rendering of untrusted input for an error message.

    Containers are named by type only: their repr could be huge or nested
    deeper than the interpreter's recursion limit.
    """
    if isinstance(value, str | bytes):
        text = repr(value[:48])
        return text if len(value) <= 48 else text + "..."
    if value is None or isinstance(value, bool | int | float):
        return repr(value)[:48]
    return f"a {type(value).__name__}"


def epoch_millis(
    record: dict[str, Any], source: str, position: str, name: str = "timestamp"
) -> float:
    """The epoch-milliseconds field ``name`` of ``record``, in epoch seconds."""
    stamp = record.get(name)
    if (
        not isinstance(stamp, int | float)
        or isinstance(stamp, bool)
        or not 0 <= stamp <= MAX_TIMESTAMP_MS
    ):
        raise ParseError(
            source, position, f"{name} must be epoch milliseconds, got {brief(stamp)}"
        )
    return stamp / 1000.0


def context_part(value: object, name: str, source: str, position: str) -> str:
    """A part of a function context: a non-empty string without '/'.

    The parts are joined with '/' into the context's Kafka key, so a '/'
    inside one would make two contexts share a key.
    """
    if not isinstance(value, str) or not value or "/" in value:
        raise ParseError(
            source,
            position,
            f"{name} must be non-empty and without '/', or it gives no usable"
            f" context part: {brief(value)}",
        )
    return value
