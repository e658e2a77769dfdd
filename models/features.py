"""The feature vector of one closed window, defined once for every model.

Every feature is either a ratio to what the context's own baseline expects
or a share of the window's own invocations, so one pooled model serves
functions of any size. To add a feature, give it a :class:`Feature` in
``FEATURES``, computed from a :class:`Window`; raw values the detector does
not count yet come in :attr:`Window.extra` and are simply missing until it
does. A model trained offline records the names it was trained on and
reads its rows by them: a feature added since is left out of its rows, one
it names that is gone refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Cost rates below this (USD/h) are treated as this, so idle is not infinite.
RATE_FLOOR = 1e-3
#: Billed GB-seconds per hour below this are treated as this: about what
#: RATE_FLOOR buys at the x86 price of a GB-second (1.67e-5 USD).
GB_SECONDS_FLOOR = 60.0


@dataclass(frozen=True, slots=True)
class Window:
    """What the detector knows of one context's window when it closes.

    ``expected_rate`` and ``expected_spread`` are what the context's
    baseline (seasonal, when it has seasons) expected of the window's cost
    rate in USD/h; ``usual_rate`` is its recent level, and
    ``usual_invocations`` the usual count of a window. ``extra`` holds what
    else the detector counted, by name: raw figures of the window
    (``errors`` and ``cold_starts`` in invocations, billed ``gb_seconds``
    and ``billed_s``, ``peak_billed_ms`` of its longest call, the mean
    ``concurrency`` its billed time implies), the context's usual call
    (``usual_billed_ms``, ``usual_error_share``) once it is known, and
    ``distinct_triggers`` and ``distinct_callers``, counted in the spans of
    the window before where the context's traces are read.
    """

    window_s: float
    cost_usd: float
    invocations: float
    expected_rate: float
    expected_spread: float
    usual_rate: float
    usual_invocations: float
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.cost_usd * 3600.0 / self.window_s


@dataclass(frozen=True, slots=True)
class Feature:
    """One named feature: how to compute it and where "as usual" lies.

    ``compute`` returns ``None`` when the window lacks what it needs.
    ``scale`` maps the value into ``[0, 1]`` for models that need bounded
    input (:meth:`unit`); ``neutral`` is the value of an unremarkable window
    and stands in for a missing one.
    """

    name: str
    compute: Callable[[Window], float | None]
    neutral: float = 0.0
    scale: float = 3.0

    def unit(self, value: float) -> float:
        return 0.5 + 0.5 * math.tanh((value - self.neutral) / self.scale)


def _cost_rate_ratio(w: Window) -> float:
    return math.log((w.rate + RATE_FLOOR) / (max(w.expected_rate, 0.0) + RATE_FLOOR))


def _cost_rate_z(w: Window) -> float:
    spread = max(w.expected_spread, 0.05 * w.expected_rate, RATE_FLOOR)
    return math.asinh((w.rate - w.expected_rate) / spread)


def _invocations_ratio(w: Window) -> float:
    return math.log((w.invocations + 1.0) / (max(w.usual_invocations, 0.0) + 1.0))


def _invocations_z(w: Window) -> float:
    usual = max(w.usual_invocations, 0.0)
    return math.asinh((w.invocations - usual) / math.sqrt(usual + 1.0))


def _cost_per_invocation_ratio(w: Window) -> float | None:
    if w.invocations <= 0 or w.usual_invocations <= 0 or w.usual_rate <= 0:
        return None
    each = w.cost_usd / w.invocations
    usual_each = w.usual_rate * w.window_s / 3600.0 / w.usual_invocations
    return math.log(each / usual_each) if each > 0 else None


def _share(name: str) -> Callable[[Window], float | None]:
    def compute(w: Window) -> float | None:
        value = w.extra.get(name)
        if value is None or w.invocations <= 0:
            return None
        return min(max(value / w.invocations, 0.0), 1.0)

    return compute


def _error_share_excess(w: Window) -> float | None:
    errors = w.extra.get("errors")
    usual = w.extra.get("usual_error_share")
    if errors is None or usual is None or w.invocations <= 0:
        return None
    return min(max(errors / w.invocations, 0.0), 1.0) - min(max(usual, 0.0), 1.0)


def _gb_seconds_ratio(w: Window) -> float | None:
    # The usual GB-seconds of a window are its usual calls at the usual
    # billed duration, at the memory size this window's calls had: a ratio
    # of billed time, so a function's size cancels out. The window's mean
    # concurrency against its usual would be the same ratio at one memory
    # size, so it is no feature of its own.
    gb_s = w.extra.get("gb_seconds")
    billed_s = w.extra.get("billed_s")
    usual_ms = w.extra.get("usual_billed_ms")
    if gb_s is None or billed_s is None or usual_ms is None or billed_s <= 0:
        return None
    usual = max(w.usual_invocations, 0.0) * max(usual_ms, 0.0) / 1000.0
    usual *= gb_s / billed_s
    floor = GB_SECONDS_FLOOR * w.window_s / 3600.0
    return math.log((max(gb_s, 0.0) + floor) / (usual + floor))


def _peak_duration_ratio(w: Window) -> float | None:
    peak = w.extra.get("peak_billed_ms")
    usual_ms = w.extra.get("usual_billed_ms")
    if peak is None or usual_ms is None or peak <= 0 or usual_ms <= 0:
        return None
    return math.log(peak / usual_ms)


def _log_count(name: str) -> Callable[[Window], float | None]:
    def compute(w: Window) -> float | None:
        value = w.extra.get(name)
        return None if value is None else math.log1p(max(value, 0.0))

    return compute


FEATURES: tuple[Feature, ...] = (
    Feature("cost_rate_ratio", _cost_rate_ratio),
    Feature("cost_rate_z", _cost_rate_z),
    Feature("invocations_ratio", _invocations_ratio),
    Feature("invocations_z", _invocations_z),
    Feature("cost_per_invocation_ratio", _cost_per_invocation_ratio, scale=2.0),
    Feature("error_share", _share("errors"), scale=0.5),
    Feature("cold_start_share", _share("cold_starts"), scale=0.5),
    Feature("error_share_excess", _error_share_excess, scale=0.3),
    Feature("gb_seconds_ratio", _gb_seconds_ratio),
    Feature("peak_duration_ratio", _peak_duration_ratio, scale=2.0),
    Feature("distinct_triggers", _log_count("distinct_triggers"), scale=2.0),
    Feature("distinct_callers", _log_count("distinct_callers"), scale=2.0),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


def window_features(window: Window) -> dict[str, float]:
    """The features of a window; those it cannot compute are left out."""
    out: dict[str, float] = {}
    for feature in FEATURES:
        value = feature.compute(window)
        if value is not None and value == value:
            out[feature.name] = value
    return out


def vector(
    features: Mapping[str, float], names: tuple[str, ...] = FEATURE_NAMES
) -> list[float]:
    """Values in the order of ``names``, the neutral value for missing ones."""
    out = []
    for name in names:
        value = features.get(name)
        if value is None or value != value:
            value = BY_NAME[name].neutral if name in BY_NAME else 0.0
        out.append(float(value))
    return out


def unit_features(features: Mapping[str, float]) -> dict[str, float]:
    """Every feature in ``[0, 1]``, missing ones at their neutral point."""
    out = {}
    for feature in FEATURES:
        value = features.get(feature.name)
        if value is None or value != value:
            out[feature.name] = 0.5
        else:
            out[feature.name] = feature.unit(value)
    return out
