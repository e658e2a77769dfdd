"""How often the garbage collector runs while a stream is processed.

The detector's state lives as long as the stream, and what each event makes
(the event, its window slots, a transition) is freed by reference counting,
as none of it forms a cycle. The collector's passes over young objects then
find nothing, yet each still walks them and, every so often, all the state:
about 8 % of a replay's instructions. While a stream runs, what existed when
it began (the engine, its tables, restored state) is frozen out of every
pass and young objects are collected a hundred times less often. Cyclic
garbage, if any, is still collected, only later.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: Allocations (less deallocations) between two passes over young objects,
#: against CPython's default of 700.
STREAM_THRESHOLD = 70_000

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] = (700, 10, 10)


@contextmanager
def streaming_gc(threshold: int = STREAM_THRESHOLD) -> Iterator[None]:
    """Collect less often inside the block; nested blocks share the outermost.

    On leaving the outermost block the thresholds are what they were and
    the frozen objects are collectable again.
    """
    global _depth, _saved
    with _lock:
        _depth += 1
        outermost = _depth == 1
        if outermost:
            _saved = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(threshold, _saved[1], _saved[2])
            logger.debug(
                "gc streaming threshold=%d frozen=%d", threshold, gc.get_freeze_count()
            )
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
                gc.unfreeze()
