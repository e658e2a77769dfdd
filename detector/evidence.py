"""Evidence: what the trace stage tells a function context (its loops, and
the triggers and callers of its windows).

The trace stage sees causal chains keyed by trace id; what it learns about a
function is sent on, keyed by that function's context, so that it meets the
context's other sources in one place (on the evidence topic in the daemon,
in process in a replay). Applying the same evidence twice changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

from dowguard.errors import ParseError
from ingest.events import Context

#: A chain re-entered the function ``hops`` times so far.
CHAIN = "chain"
#: The chain has had no new span for the quiet period: it has ended.
CHAIN_ENDED = "chain_ended"
#: An invocation a data source triggered wrote ``item`` back into it;
#: ``cause_item`` is the item that triggered the invocation.
WROTE_ITEM = "wrote_item"
#: The data source's ``item`` triggered an invocation of the function.
ITEM_TRIGGERED = "item_triggered"
#: The sketches of one window of the function's invocation spans, as one
#: trace partition saw them: ``time`` is the window's start, ``triggers``
#: and ``callers`` the bits of its distinct triggers and calling functions
#: (see ``detector.spanwindows``). The context side merges those of every
#: partition.
# Limitation: during a rolling upgrade, an older daemon dead-letters this kind.
SPAN_WINDOW = "span_window"
#: Facts the context stage pairs by item key, whatever trace partition each
#: came from (see ``detector.resources.ItemPairing``).
ITEM_FACTS = frozenset({WROTE_ITEM, ITEM_TRIGGERED})


@dataclass(slots=True)
class Evidence:
    """One fact about a causal chain through one function context.

    ``chain`` identifies the chain (its root trace and span) so that repeats
    are idempotent; ``hops`` is the number of re-entries of the function in
    that chain; ``via`` names the trigger that closed the loop (a queue, a
    topic, a bucket) or the mechanism (``lineage``, ``self_write``).

    ``method`` says how the chain was followed: ``trace`` (parents and
    links), ``resource`` (a write paired with the invocation its resource
    triggered, where the trace broke; ``resources`` lists them) or
    ``lineage``. ``cost_usd`` is the priced cost of every invocation of the
    chain so far; ``fan_out`` the most invocations one invocation of it
    caused; ``growth`` how many times larger each generation of the
    function is than the one before (1.0 for a straight loop);
    ``projected_usd_per_hour`` the cost of the next hour if it goes on;
    ``guessed`` that some invocation of the chain was paired with a write
    by guess (the oldest pending one, no item key to match), so its count
    may run ahead of the truth.

    Item facts (``WROTE_ITEM``, ``ITEM_TRIGGERED``) name the invocation by
    the item that triggered it, ``via`` the data source, ``chain`` the
    invocation's chain in its trace partition and ``cost_usd`` its own cost;
    ``time`` is when the invocation started.

    A ``SPAN_WINDOW`` fact carries the bits of its sketches in ``triggers``
    and ``callers`` (each under 2**64, so JSON keeps them exact).
    """

    kind: str
    context: Context
    time: float
    chain: str
    hops: int = 0
    cost_usd: float = 0.0
    via: str = ""
    path: tuple[str, ...] = ()
    method: str = "trace"
    resources: tuple[str, ...] = ()
    fan_out: int = 0
    growth: float = 1.0
    invocations: int = 0
    projected_usd_per_hour: float = 0.0
    guessed: bool = False
    item: str = ""
    cause_item: str = ""
    triggers: int = 0
    callers: int = 0


#: Sketch bits are those of a 64-bit mask.
_SKETCH_LIMIT = 1 << 64


def encode_evidence(ev: Evidence) -> bytes:
    data = asdict(ev)
    data["context"] = list(ev.context)
    return orjson.dumps(data)


def decode_evidence(raw: bytes, source: str) -> Evidence:
    try:
        data = orjson.loads(raw)
        data["context"] = Context(*data["context"])
        data["path"] = tuple(data.get("path", ()))
        data["resources"] = tuple(data.get("resources", ()))
        evidence = Evidence(**data)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ParseError(source, "offset 0", f"bad evidence message: {exc}") from exc
    for name in ("triggers", "callers"):
        bits = getattr(evidence, name)
        if type(bits) is not int or not 0 <= bits < _SKETCH_LIMIT:
            raise ParseError(
                source,
                "offset 0",
                f"bad evidence message: {name} {bits!r} is no 64-bit sketch",
            )
    return evidence
