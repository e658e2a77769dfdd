"""Distinct triggers and callers of each function context's event-time windows,
as one trace partition sees them in its invocation spans: 64-bit sketches
that the context side merges across partitions and counts."""

from __future__ import annotations

import heapq
import logging
import math
import zlib

from detector.evidence import SPAN_WINDOW, Evidence
from detector.resources import resource_name
from ingest.events import Context, Span

logger = logging.getLogger(__name__)

#: Bits of one sketch: one Python int each for triggers and callers.
SKETCH_BITS = 64
#: Event time from the start of a window to the start of the window that
#: reads its span sketches (at least the next): with 10 s windows the fourth
#: on, which closes 55 s after the sketched one began, at the default 5 s of
#: lateness. A trace partition sends its sketches once it has read a span
#: past the window by its pending time; on the bundled recording (three
#: partitions) the latest came in 50 s after its window began.
SKETCH_WAIT_S = 40.0
#: (context, window) sketches one trace partition keeps open at a time;
#: invocations of a pair beyond it are counted in ``overflow`` and left out.
MAX_OPEN = 4096
#: 2**64 divided by the golden ratio, odd: Knuth's multiplicative hashing.
_GOLDEN = 0x9E3779B97F4A7C15
_WORD = (1 << 64) - 1
#: Bits of a hash that name one of SKETCH_BITS bits.
_BIT_INDEX = 6
#: Keys whose bit is remembered; beyond it the memo starts afresh.
MAX_MEMO = 4096
# (trigger, destination) or a caller's context -> its bit: a partition
# sees few of either, and hashing each span's anew would double the cost
# the sketches add to a span.
_bits: dict[object, int] = {}


def sketch_bit(key: str) -> int:
    """The bit of ``key`` in a sketch.

    CRC-32 rather than ``hash``: the bit must be the same in every process,
    since the sketches of many daemons are merged into one. CRC-32 is linear,
    so the low bits of keys that differ in a digit or two collide less than
    chance would, and linear counting would overcount them; a Fibonacci
    multiplication spreads every bit of it into the top ones taken.
    """
    mixed = (zlib.crc32(key.encode()) * _GOLDEN) & _WORD
    return 1 << (mixed >> (64 - _BIT_INDEX))


def distinct(mask: int) -> float:
    """How many distinct keys set the bits of ``mask``: linear counting.

    With ``z`` of ``m`` bits still clear, ``-m ln(z / m)`` estimates the keys
    (Whang, Vander-Zanden and Taylor, 1990); exact while no two keys share a
    bit, and ``m ln m`` (about 266) once every bit is set.
    """
    zeros = SKETCH_BITS - mask.bit_count()
    return float(round(-SKETCH_BITS * math.log(max(zeros, 1) / SKETCH_BITS)))


def trigger_key(span: Span) -> str:
    """The trigger of an invocation span: its type and the resource it named."""
    where = resource_name(span.destination) if span.destination else ""
    return f"{span.trigger}\x1f{where}"


def caller_key(context: Context) -> str:
    return "\x1f".join(context)


def _memo(key: object, bit: int) -> int:
    if len(_bits) >= MAX_MEMO:
        _bits.clear()
    _bits[key] = bit
    return bit


class SpanWindows:
    """Sketches of the invocations of one trace partition, per context and
    window, until the partition's watermark has passed the window by
    ``settle_s`` (by then every invocation of the window has been linked
    to its cause or has given up waiting for it); then each is sent on.

    A span of a window already sent on opens a fresh sketch of it, which is
    sent at the next advance: the context side merges every sketch of a
    window, from any partition, and judges whether it came too late.
    """

    def __init__(self, window_s: float, settle_s: float) -> None:
        self.window_s = window_s
        self.settle_s = settle_s
        # window start -> context -> [trigger bits, caller bits]
        self._open: dict[float, dict[Context, list[int]]] = {}
        self._starts: list[float] = []
        self._count = 0
        self.overflow = 0

    @property
    def open_sketches(self) -> int:
        return self._count

    def add(self, span: Span, caller: Context | None) -> None:
        """Count one resolved invocation span and the context that caused it."""
        time = span.time
        start = time - time % self.window_s
        window = self._open.get(start)
        if window is None:
            window = self._open[start] = {}
            heapq.heappush(self._starts, start)
        masks = window.get(span.context)
        if masks is None:
            if self._count >= MAX_OPEN:
                if not self.overflow:
                    logger.warning(
                        "span sketches full open=%d window=%s", self._count, start
                    )
                self.overflow += 1
                return
            masks = window[span.context] = [0, 0]
            self._count += 1
        bits = _bits
        trigger = (span.trigger, span.destination)
        bit = bits.get(trigger)
        if bit is None:
            bit = _memo(trigger, sketch_bit(trigger_key(span)))
        masks[0] |= bit
        if caller is not None:
            bit = bits.get(caller)
            if bit is None:
                bit = _memo(caller, sketch_bit(caller_key(caller)))
            masks[1] |= bit

    def advance(self, watermark: float, out: list[Evidence]) -> None:
        """Send on the sketches of every window ``watermark`` has settled."""
        # Limitation: one record per context, window, partition; heavy at many contexts.
        starts = self._starts
        due = watermark - self.window_s - self.settle_s
        while starts and starts[0] <= due:
            start = heapq.heappop(starts)
            window = self._open.pop(start)
            self._count -= len(window)
            for context, (triggers, callers) in window.items():
                out.append(
                    Evidence(
                        SPAN_WINDOW,
                        context,
                        start,
                        "",
                        triggers=triggers,
                        callers=callers,
                    )
                )
