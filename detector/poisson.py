"""Upper quantiles of Poisson counts: how many events in a span are more than
chance at a stated tail probability, exactly or cached on a coarse grid."""

from __future__ import annotations

import functools
import math

#: Below this ratio of the tail probability a term of the tail no longer
#: matters to the sum (the sum starts this far out).
_NEGLIGIBLE = 1e-14


def normal_tail(z: float) -> float:
    """The probability that a standard normal value exceeds ``z``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def upper_quantile(mean: float, tail: float) -> int:
    """The fewest events ``k`` such that a Poisson count of ``mean`` reaches
    ``k`` with probability at most ``tail``.

    The tail is summed from far out inwards, smallest terms first, so the
    answer is exact to the last event even for tails of 1e-12.

    >>> upper_quantile(3.0, normal_tail(5.0))
    16
    >>> upper_quantile(0.0, 1e-9)
    1
    """
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail must be between 0 and 1, got {tail!r}")
    if mean <= 0.0:
        return 1
    log_mean = math.log(mean)
    floor = math.log(tail * _NEGLIGIBLE)

    def log_pmf(k: int) -> float:
        return k * log_mean - mean - math.lgamma(k + 1.0)

    # Far enough out that the tail beyond adds nothing, but not so far that
    # its probability underflows (each doubling of the offset at most squares
    # the term, and the loop stops at the first one below the floor).
    offset = max(4.0, math.sqrt(mean))
    k = math.ceil(mean + offset)
    while log_pmf(k) > floor:
        offset *= 2.0
        k = math.ceil(mean + offset)
    term = math.exp(log_pmf(k))
    total = term
    # P(X >= k) grows as k falls; the answer is one above the first k whose
    # tail exceeds ``tail``.
    while k > 0:
        term *= k / mean
        k -= 1
        total += term
        if total > tail:
            return k + 1
    return 1


#: Relative resolution of the grid of :func:`cached_quantile` (1/2**7).
_GRID_BITS = 7


@functools.lru_cache(maxsize=8192)
def _quantile_on_grid(mean: float, tail: float) -> int:
    return upper_quantile(mean, tail)


def cached_quantile(mean: float, tail: float) -> int:
    """:func:`upper_quantile` of ``mean`` rounded up to within 1/128 of it,
    cached: never below the exact quantile, at most a few events above it
    (``mean / 128`` and one), for paths that judge every call."""
    if mean <= 0.0:
        return 1
    _, exponent = math.frexp(mean)
    step = math.ldexp(1.0, exponent - _GRID_BITS)
    return _quantile_on_grid(math.ceil(mean / step) * step, tail)
