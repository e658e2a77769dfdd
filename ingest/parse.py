"""The format dispatcher: any supported message or recorded file into events.

Kafka messages and files are recognised by their content (and files also by
their extension). Whatever a parser raises comes out as :class:`ParseError`,
so bad input can never stop the daemon or a replay.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import logging
import operator
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson

from dowguard.errors import ParseError
from ingest.events import (
    EVENT_ARRAY_FAMILY,
    EVENT_ARRAY_PREFIX,
    EVENT_JSON_MARKER,
    Context,
    Event,
    event_from_array,
    event_from_dict,
    invocation_from_array,
    start_from_array,
)
from ingest.formats.cloudwatch import looks_like_cloudwatch, parse_cloudwatch
from ingest.formats.common import (
    GZIP_MAGIC,
    LATEST_EVENT_TIME_S,
    b64decode,
    check_size,
    gunzip,
)
from ingest.formats.cur import looks_like_cur_header, parse_cur_csv, parse_cur_parquet
from ingest.formats.focus import (
    looks_like_focus_header,
    looks_like_focus_record,
    parse_focus_csv,
    parse_focus_parquet,
    parse_focus_record,
)
from ingest.formats.lambda_report import parse_telemetry_batch
from ingest.formats.metric_stream import looks_like_metric_stream, parse_metric_stream
from ingest.formats.otlp import looks_like_otlp, parse_otlp
from ingest.formats.recording import EXTENSION as RECORDING_EXTENSION
from ingest.formats.recording import read_recording

logger = logging.getLogger(__name__)

ErrorSink = Callable[[ParseError], None]
T = TypeVar("T")

#: Largest file read whole into memory (every format but recordings and
#: Parquet, which are read column by column).
# Limitation: larger CSV and JSON files are refused, not streamed.
MAX_FILE_BYTES = 512 * 1024 * 1024

_PARQUET_MAGIC = b"PAR1"
_ARROW_MAGIC = b"ARROW1"
# base64 of the first gzip bytes: how a base64-encoded gzip payload starts.
_B64_GZIP = b"H4sI"
_JSON_LINES = (".jsonl", ".ndjson")
_by_time = operator.attrgetter("time")


# ---- one Kafka message ---------------------------------------------------------


def parse_message(raw: bytes, source: str, key: bytes | None = None) -> list[Event]:
    """The events of one message of any supported format, found by content.

    ``key`` gives the function context of a Telemetry API array that carries
    none itself (see :meth:`Context.from_key`). A message is one unit: the
    first bad record in it rejects the whole message.
    """
    if type(raw) is not bytes:
        if not isinstance(raw, (bytes, bytearray)):
            raise ParseError(
                source, "offset 0", f"expected bytes, got {type(raw).__name__}"
            )
        raw = bytes(raw)
    check_size(raw, source)
    if raw.startswith(EVENT_ARRAY_PREFIX):
        # dowguard's own array form, as published to Kafka: no format search.
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(source, "offset 0", f"invalid JSON: {exc}") from exc
        event = invocation_from_array(doc)
        if event is not None:
            return [event]
        start = start_from_array(doc)
        if start is not None:
            return [start]
        return _own_array(doc, source, "offset 0")
    if not raw.strip():
        raise ParseError(source, "offset 0", "empty message")
    try:
        return _parse_bytes(raw, source, _key_context(key), None, unwrap=True)
    except ParseError:
        raise
    except Exception as exc:
        raise _bug("dispatcher", exc, source) from exc


def _key_context(key: bytes | None) -> Context | None:
    if not key:
        return None
    try:
        return Context.from_key(key)
    except ValueError:
        return None


def _parse_bytes(
    data: bytes,
    source: str,
    context: Context | None,
    on_error: ErrorSink | None,
    unwrap: bool,
) -> list[Event]:
    """Events of content whose format is unknown; gzip or base64 gzip once."""
    if unwrap and data.startswith(GZIP_MAGIC):
        inner = gunzip(data, source)
        return _parse_bytes(inner, source, context, on_error, unwrap=False)
    head = data[:64].lstrip()
    if unwrap and head.startswith(_B64_GZIP):
        inner = gunzip(b64decode(data.strip(), source, "offset 0"), source)
        return _parse_bytes(inner, source, context, on_error, unwrap=False)
    if head.startswith((b"{", b"[")):
        return _parse_json_text(data, source, context, on_error)
    if head.startswith(_PARQUET_MAGIC):
        return _parse_parquet(data, source, on_error)
    header = _csv_header(data)
    if header is not None:
        return _parse_csv(header, data, source, on_error)
    raise ParseError(
        source, "offset 0", f"unrecognised format (starts with {data[:24]!r})"
    )


def _parse_json_text(
    data: bytes, source: str, context: Context | None, on_error: ErrorSink | None
) -> list[Event]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if b"\n" in data.strip():
            return _parse_json_lines(data, source, context, on_error)
        raise ParseError(source, f"offset {exc.pos}", f"invalid JSON: {exc}") from exc
    return _parse_document(doc, data, source, context, on_error)


def _parse_document(
    doc: Any,
    data: bytes | None,
    source: str,
    context: Context | None,
    on_error: ErrorSink | None,
) -> list[Event]:
    """A whole JSON document: one object, or an array of them."""
    if isinstance(doc, dict):
        return _parse_object(doc, data, source, "offset 0", context)
    if not isinstance(doc, list):
        raise ParseError(
            source, "offset 0", f"unrecognised JSON document ({type(doc).__name__})"
        )
    if doc and isinstance(doc[0], str) and doc[0].startswith(EVENT_ARRAY_FAMILY):
        return _own_array(doc, source, "offset 0")
    if _is_telemetry(doc):
        return _call("telemetry", source, parse_telemetry_batch, doc, context, source)
    events: list[Event] = []
    for i, item in enumerate(doc):
        try:
            if not isinstance(item, dict):
                raise ParseError(source, f"[{i}]", "array item must be an object")
            events.extend(_parse_object(item, None, source, f"[{i}]", context))
        except ParseError as exc:
            _report(_nested(f"[{i}]", exc), on_error)
    return events


def _parse_json_lines(
    data: bytes, source: str, context: Context | None, on_error: ErrorSink | None
) -> list[Event]:
    """One JSON document a line; each line is its own record."""
    events: list[Event] = []
    for n, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        position = f"line {n}"
        try:
            check_size(line, source)
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ParseError(source, position, f"invalid JSON: {exc}") from exc
            if isinstance(doc, dict):
                events.extend(_parse_object(doc, line, source, position, context))
            else:
                events.extend(_parse_document(doc, line, source, context, None))
        except ParseError as exc:
            _report(_nested(position, exc), on_error)
    return events


def _parse_object(
    obj: dict[str, Any],
    data: bytes | None,
    source: str,
    position: str,
    context: Context | None,
) -> list[Event]:
    """One JSON object, by the fields that tell the formats apart."""
    if EVENT_JSON_MARKER in obj:
        event = _call("event_json", source, event_from_dict, obj, source, position)
        if not 0 <= event.time <= LATEST_EVENT_TIME_S:
            raise ParseError(source, position, f"event time out of range: {event.time}")
        return [event]
    if looks_like_cloudwatch(obj):
        return _call("cloudwatch", source, parse_cloudwatch, obj, source)
    if looks_like_otlp(obj):
        return list(_call("otlp", source, parse_otlp, obj, source))
    if looks_like_metric_stream(obj):
        raw = data if data is not None else orjson.dumps(obj)
        return _call("metric_stream", source, parse_metric_stream, raw, source)
    if isinstance(obj.get("events"), list):
        return _call("telemetry", source, parse_telemetry_batch, obj, context, source)
    if looks_like_focus_record(obj):
        return list(_call("focus", source, parse_focus_record, obj, source, position))
    names = ", ".join(sorted(obj)[:5]) or "none"
    raise ParseError(source, position, f"unrecognised JSON object (keys: {names})")


def _own_array(doc: list[Any], source: str, position: str) -> list[Event]:
    """One event in dowguard's array form."""
    event = _call("event_array", source, event_from_array, doc, source, position)
    if not 0 <= event.time <= LATEST_EVENT_TIME_S:
        raise ParseError(source, position, f"event time out of range: {event.time}")
    return [event]


def _is_telemetry(items: list[Any]) -> bool:
    """Whether an array holds Telemetry API events ({time, type, record})."""
    first = items[0] if items else None
    return (
        isinstance(first, dict)
        and isinstance(first.get("type"), str)
        and "record" in first
        and EVENT_JSON_MARKER not in first
    )


def _csv_header(data: bytes) -> list[str] | None:
    line = data.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf")
    try:
        header = next(csv.reader([line.decode("utf-8").rstrip("\r")]), [])
    except (UnicodeDecodeError, csv.Error):
        return None
    if looks_like_cur_header(header) or looks_like_focus_header(header):
        return header
    return None


def _parse_csv(
    header: list[str], data: bytes, source: str, on_error: ErrorSink | None
) -> list[Event]:
    if looks_like_cur_header(header):
        return list(_call("cur", source, parse_cur_csv, data, source, on_error))
    return list(_call("focus", source, parse_focus_csv, data, source, on_error))


def _parse_parquet(
    data: bytes | Path, source: str, on_error: ErrorSink | None
) -> list[Event]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target: Any = pa.BufferReader(data) if isinstance(data, bytes) else data
    try:
        names = pq.read_schema(target).names
    except (pa.ArrowException, OSError) as exc:
        raise ParseError(source, "file", f"unreadable Parquet: {exc}") from exc
    if looks_like_cur_header(names):
        return list(_call("cur", source, parse_cur_parquet, data, source, on_error))
    if looks_like_focus_header(names):
        return list(_call("focus", source, parse_focus_parquet, data, source, on_error))
    raise ParseError(source, "schema", "Parquet file is neither CUR nor FOCUS")


# ---- recorded files ------------------------------------------------------------


def read_path(path: str | Path, on_error: ErrorSink) -> Iterator[Event]:
    """The events of a recorded file (or of every file of a directory).

    Errors in one record go to ``on_error`` and reading goes on; a file
    that cannot be opened or whose format is unknown gives one error and no
    events. Events come in file order (time order only for recordings).
    """
    path = Path(path)
    if path.is_dir():
        files = (read_path(f, on_error) for f in _files(path))
        return itertools.chain.from_iterable(files)
    return _open(path, on_error)[0]


def read_paths(paths: Iterable[str | Path], on_error: ErrorSink) -> Iterator[Event]:
    """The events of several files (or directories) merged in time order.

    Recordings are time-ordered already; the events of any other file are
    sorted after it is read, which its size bounds.
    """
    files = [f for p in map(Path, paths) for f in (_files(p) if p.is_dir() else [p])]
    streams: list[Iterator[Event]] = []
    for file in files:
        events, ordered = _open(file, on_error)
        # Limitation: every file but a recording is held in memory, all at once.
        streams.append(events if ordered else iter(sorted(events, key=_by_time)))
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=_by_time)


#: Files a recording directory may hold beside its data: its ground-truth
#: labels and its description.
NOT_DATA = frozenset({"labels.json", "readme.md"})


def _files(directory: Path) -> list[Path]:
    """Data files under a directory, sorted, without hidden or partial ones."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.name.lower() not in NOT_DATA
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def _open(path: Path, on_error: ErrorSink) -> tuple[Iterator[Event], bool]:
    """The events of one file and whether they come in time order."""
    source = str(path)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind == RECORDING_EXTENSION:
            return read_recording(path, source, on_error), True
        if kind == ".parquet":
            return iter(_parse_parquet(path, source, on_error)), False
        data = _read_file(path, source)
        if kind == ".gz":
            if not data.startswith(GZIP_MAGIC):
                raise ParseError(source, "offset 0", "not gzip data")
            data = gunzip(data, source, limit=MAX_FILE_BYTES)
            kind = suffixes[0] if len(suffixes) == 2 else ""
        if data.startswith(_ARROW_MAGIC):
            return _open_recording(path, kind, on_error)
        return iter(_parse_file_data(data, kind, source, on_error)), False
    except ParseError as exc:
        on_error(exc)
    except Exception as exc:  # a parser bug must not end a replay
        on_error(_bug("file reader", exc, source))
    return iter(()), True


def _open_recording(
    path: Path, kind: str, on_error: ErrorSink
) -> tuple[Iterator[Event], bool]:
    if path.suffix.lower() == ".gz":
        raise ParseError(
            str(path), "file", "compressed recording: recordings compress inside"
        )
    return read_recording(path, str(path), on_error), True


def _read_file(path: Path, source: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ParseError(
                source, "file", f"{size} bytes exceeds the {MAX_FILE_BYTES} byte limit"
            )
        return path.read_bytes()
    except OSError as exc:
        raise ParseError(source, "file", f"cannot read: {exc.strerror}") from exc


def _parse_file_data(
    data: bytes, kind: str, source: str, on_error: ErrorSink
) -> list[Event]:
    if kind in _JSON_LINES:
        return _parse_json_lines(data, source, None, on_error)
    if kind == ".json":
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ParseError(
                source, f"offset {exc.pos}", f"invalid JSON: {exc}"
            ) from exc
        return _parse_document(doc, data, source, None, on_error)
    if kind == ".csv":
        header = _csv_header(data)
        if header is None:
            raise ParseError(source, "header", "CSV is neither CUR nor FOCUS")
        return _parse_csv(header, data, source, on_error)
    return _parse_bytes(data, source, None, on_error, unwrap=True)


# ---- error routing -------------------------------------------------------------


def _call(name: str, source: str, parser: Callable[..., T], *args: Any) -> T:
    """Run a parser; anything it raises that is not a ParseError is a bug."""
    try:
        return parser(*args)
    except ParseError:
        raise
    except Exception as exc:
        raise _bug(f"{name} parser", exc, source) from exc


def _bug(name: str, exc: Exception, source: str) -> ParseError:
    logger.warning(
        "parser failed unexpectedly parser=%s source=%s", name, source, exc_info=exc
    )
    return ParseError(
        source, "offset 0", f"{name} failed: {type(exc).__name__}: {exc}"[:300]
    )


def _report(error: ParseError, on_error: ErrorSink | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def _nested(position: str, exc: ParseError) -> ParseError:
    """``exc`` placed inside a record at ``position`` of a larger input."""
    inner = exc.position
    if inner == position or inner.startswith((f"{position} ", f"{position},")):
        return exc
    if inner in ("offset 0", "line 1"):  # the start of the record itself
        return _moved(exc, position)
    return _moved(exc, f"{position}, {inner}")


def _moved(exc: ParseError, position: str) -> ParseError:
    moved = ParseError(exc.source, position, exc.reason)
    moved.__cause__ = exc.__cause__ or exc
    return moved
