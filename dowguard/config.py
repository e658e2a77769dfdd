"""Settings shared by the daemon, replay and the API.

Precedence, lowest first: defaults, an optional TOML file (``--config`` or
``DOWGUARD_CONFIG``), environment variables prefixed ``DOWGUARD_``, and the
command-line flags that override them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from dowguard.errors import ConfigError


class Settings(BaseSettings):
    """Every setting dowguard reads; the names are the TOML keys."""

    model_config = SettingsConfigDict(env_prefix="DOWGUARD_", extra="forbid")

    database_url: str = "sqlite:///dowguard.db"
    kafka_bootstrap: str = ""
    group_id: str = "dowguard"
    topic_invocations: str = "dowguard.invocations"
    topic_billing: str = "dowguard.billing"
    topic_traces: str = "dowguard.traces"
    topic_evidence: str = "dowguard.evidence"
    topic_deadletter: str = "dowguard.deadletter"
    partitions: int = 3
    window_s: float = 10.0
    lateness_s: float = 5.0
    recursion_hops: int = 3
    #: Re-entries a bounded retry may make on a chain followed only by
    #: guessing (no trace, no item key); beyond them it turns critical.
    recursion_max_retries: int = 9
    commit_interval_s: float = 1.0
    #: Wall seconds between two reads of the account shares that the other
    #: daemons of the group stored with their checkpoints.
    account_shares_read_s: PositiveFloat = 5.0
    # The daemon stores alert transitions every commit interval, but snapshots
    # its state and commits offsets only once checkpoint_interval_s have
    # passed (longer while a checkpoint would take over a tenth of the time)
    # or checkpoint_batches batches were read (0: by time only) since the
    # last checkpoint: a restart re-reads what came after it.
    checkpoint_interval_s: PositiveFloat = 10.0
    checkpoint_batches: NonNegativeInt = 0
    dev_mode: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    #: Base URL people reach the API at; alerts forwarded link back to it.
    public_url: str = ""
    alertmanager_url: str = ""
    alertmanager_resend_s: float = 60.0
    # Enforcement: dry_run decides and records only; ttl 0 never auto-releases.
    enforcement_mode: Literal["dry_run", "aws_lambda", "webhook"] = "dry_run"
    enforcement_protected: list[str] = []
    enforcement_max_per_hour: int = 10
    enforcement_max_per_hour_per_account: int = 3
    enforcement_cooldown_s: float = 900.0
    enforcement_ttl_s: float = 3600.0
    # How often the daemon releases what is due; loops are released by the
    # ttl only when enforcement_release_loops is set.
    enforcement_tick_s: float = 30.0
    enforcement_release_loops: bool = False
    enforcement_approval: bool = False
    enforcement_ceiling: int = 0
    enforcement_recursion_terminate: bool = False
    enforcement_webhook_url: str = ""
    enforcement_webhook_secret: str = ""
    enforcement_aws_endpoint_url: str = ""
    # Prometheus /metrics of the daemon (port 0: not served); cost gauges
    # are exported for the costliest metrics_top_n functions only.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    metrics_top_n: int = 50
    # Slow-ramp budgets in USD, keyed "provider/account" (the account's sum),
    # "provider/account/region/function" (each qualifier on its own) or with
    # "/qualifier" (that context only).
    daily_budgets: dict[str, PositiveFloat] = {}
    monthly_budgets: dict[str, PositiveFloat] = {}

    @field_validator("daily_budgets", "monthly_budgets")
    @classmethod
    def _budget_keys(cls, budgets: dict[str, float]) -> dict[str, float]:
        for key in budgets:
            parts = key.split("/")
            if len(parts) not in (2, 4, 5) or not all(parts):
                raise ValueError(
                    f"budget key {key!r} is not provider/account or"
                    " provider/account/region/function[/qualifier]"
                )
        return budgets

    # Warnings for rises too small in dollars for a cost spike: a cost rate
    # rise_ratio times its baseline over rise_windows windows (0: off) without
    # their rise_trim costliest, rise_z deviations above it, at least
    # rise_min_excess USD/h; a slow ramp ramp_warn_factor times its anchor,
    # ramp_warn_z Poisson deviations, at least ramp_warn_min_excess USD/h.
    # They are warnings only; rule_warmup is how many observations the
    # duration and error baselines need before they judge. The rise path's
    # sequential test keeps to one false alert per context in
    # rise_false_alert_hours (0: no such test).
    rise_windows: NonNegativeInt = 9
    rise_ratio: PositiveFloat = 2.0
    rise_z: PositiveFloat = 5.0
    rise_trim: NonNegativeInt = 4
    rise_min_excess: NonNegativeFloat = 0.05
    rise_false_alert_hours: NonNegativeFloat = 2000.0
    ramp_warn_factor: PositiveFloat = 1.5
    ramp_warn_z: PositiveFloat = 5.0
    ramp_warn_min_excess: NonNegativeFloat = 0.05
    # A context whose usual count was learnt from fewer calls than this has
    # no established usual: a cost spike on its rate alone turns critical
    # only once its excursion so far averages the critical rate (0: off).
    established_calls: NonNegativeInt = 50
    rule_warmup: PositiveInt = 20
    # A window of a context alerts only past burst_margin times the excess of
    # the short bursts it has shown until its run outlasts burst_windows
    # windows (0: bursts are not learnt); a burst has at most burst_windows
    # windows and fades with burst_half_life_s. Until a context has learnt
    # burst_cold_windows windows, a warning on a short excursion of it waits
    # as a learnt burst's would, less far above the warning rate as it ages
    # (the cold-start rule of bursts; 0: off).
    burst_margin: NonNegativeFloat = 3.0
    burst_windows: PositiveInt = 4
    burst_half_life_s: PositiveFloat = 86_400.0
    burst_cold_windows: NonNegativeInt = 120
    # A context learns how long its bursts last, the tail of long calls that
    # end after the starts included, and holds a like excursion for that
    # many windows rather than burst_windows, up to this bound.
    burst_longest_windows: PositiveInt = 12

    @model_validator(mode="after")
    def _rise_trim_below_windows(self) -> Settings:
        if self.rise_windows and self.rise_trim >= self.rise_windows:
            raise ValueError(
                f"rise_trim {self.rise_trim} must be below rise_windows"
                f" {self.rise_windows}: the rest of the horizon is what is judged"
            )
        return self

    # Learned models: the pooled online model, and an offline model trained
    # by `dowguard train` (a models/NAME folder or one of its vN versions).
    online_model: bool = True
    model_path: str = ""


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a TOML file, the environment and ``overrides``.

    ``overrides`` with the value ``None`` are ignored, so that unset CLI
    flags leave the other sources in force.
    """
    file_values: dict[str, Any] = {}
    path = path or os.environ.get("DOWGUARD_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    try:
        env_values = Settings().model_dump(exclude_unset=True)
        merged = {**file_values, **env_values}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
