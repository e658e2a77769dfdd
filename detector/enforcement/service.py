"""The enforcer: turns alert transitions into audited, idempotent actions.

The action log is its only state, so a restarted enforcer decides the same.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from detector import metrics
from detector.alerts import OPENED, RESOLVED, UPDATED, FunctionStatus, Transition
from detector.enforcement.audit import (
    APPROVED,
    ATTEMPTING,
    FAILED,
    FINAL_STATES,
    PENDING_APPROVAL,
    REJECTED,
    RELEASE,
    SKIPPED,
    SUCCEEDED,
    THROTTLE,
    ActionLog,
    ActionRecord,
    MemoryActionLog,
    new_action_id,
)
from detector.enforcement.base import ActionConflict, Hook, HookError, UnknownAction
from detector.enforcement.breaker import CircuitBreaker
from detector.enforcement.dryrun import DryRunHook
from detector.enforcement.policy import Policy
from detector.enforcement.webhook import WebhookHook
from dowguard.config import Settings
from dowguard.errors import ConfigError
from ingest.events import Context

logger = logging.getLogger(__name__)

#: The region of the client built at start when the environment names none.
WARM_REGION = "us-east-1"


class _CircuitOpen(Exception):
    """The breaker refused the call; no request went out."""


def episode_key(fingerprint: str, starts_at: float, verb: str) -> str:
    """The idempotency key of one verb for one alert episode."""
    return f"{fingerprint}@{starts_at:.3f}:{verb}"


class Enforcer:
    """Decides, records and performs throttles and releases through one hook.

    The daemon hands it every committed batch of transitions and calls
    :meth:`tick` now and then; the API calls the manual and approval
    methods. Each action is written to the log before the hook is called
    and updated with what happened; failures are recorded, never raised
    into the daemon loop.

    Retries of transient hook failures wait ``backoff_s``, doubling up to
    ``max_backoff_s``, for at most ``max_attempts`` calls, all behind
    ``breaker``. A failed release is tried again by :meth:`tick` after
    ``release_retry_s``; an action left ``attempting`` for ``stale_after_s``
    (its process died) is marked failed.
    """

    def __init__(
        self,
        hook: Hook,
        policy: Policy | None = None,
        log: ActionLog | None = None,
        clock: Callable[[], float] = time.time,
        *,
        sleep: Callable[[float], None] = time.sleep,
        breaker: CircuitBreaker | None = None,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        release_retry_s: float = 300.0,
        stale_after_s: float = 900.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"enforcer: max_attempts must be >= 1, got {max_attempts}")
        self.hook = hook
        self.policy = policy or Policy()
        self.log: ActionLog = log if log is not None else MemoryActionLog()
        self.clock = clock
        self.sleep = sleep
        self.breaker = breaker or CircuitBreaker(hook.name, clock=clock)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.release_retry_s = release_retry_s
        self.stale_after_s = stale_after_s
        # One decision at a time: rate limits and idempotency read the log
        # and then write it, which must not interleave.
        self._lock = threading.RLock()

    # Entry points of the daemon

    def on_transitions(self, transitions: Sequence[Transition]) -> None:
        """Act on a committed batch of alert transitions; never raises."""
        for t in transitions:
            try:
                with self._lock:
                    if t.event in (OPENED, UPDATED):
                        self._on_firing(t)
                    elif t.event == RESOLVED:
                        self._on_resolved(t)
            except Exception:
                # Whatever goes wrong here (a storage error, a bug) must not
                # stop detection; the log line carries the traceback.
                logger.exception(
                    "enforcement error fingerprint=%s event=%s function=%s",
                    t.fingerprint,
                    t.event,
                    t.context.function,
                )

    def on_status(self, rows: Sequence[FunctionStatus]) -> None:
        """Note throttled contexts whose cost rate is back near baseline.

        Only a rate above zero counts: a context throttled to zero spends
        nothing, which says nothing about its demand. Never raises.
        """
        try:
            with self._lock:
                held = {rec.context for rec in self._unreleased()}
                for row in rows:
                    rate, base = row.cost_usd_per_hour, row.baseline_usd_per_hour
                    if row.context in held and self.policy.near_baseline(rate, base):
                        self._mark_recovered(row.context, None)
        except Exception:
            logger.exception("enforcement error in on_status rows=%d", len(rows))

    def tick(self, now: float | None = None) -> list[ActionRecord]:
        """Do the releases that are due; returns the release records made."""
        now = self.clock() if now is None else now
        done: list[ActionRecord] = []
        try:
            with self._lock:
                self._fail_stale(now)
                self._carry_out_approved(now)
                for throttle in self._unreleased():
                    due = self.policy.release_due(throttle)
                    if due is None or due > now or self._release_pending(throttle, now):
                        continue
                    why = "recovered" if "recovered_at" in throttle.outcome else "ttl"
                    done.append(self._release(throttle, f"automatic release: {why}"))
        except Exception:
            logger.exception("enforcement error in tick")
        return done

    def run_ticks(self, stop: threading.Event, interval_s: float = 30.0) -> None:
        """Call :meth:`tick` every ``interval_s`` until ``stop`` is set.

        Meant for a daemon thread beside the consumer loop, which calls
        :meth:`on_transitions` only when a commit carried transitions.
        """
        while not stop.wait(interval_s):
            self.tick()

    # Entry points of people (the API)

    def manual_throttle(
        self, context: Context, reason: str, *, loop: bool = False
    ) -> ActionRecord:
        """Throttle a context now, on a person's request."""
        with self._lock:
            rec = self._manual(context, THROTTLE, reason)
            rec.outcome = {"manual": True, "loop": loop}
            active = self._active(context)
            if active is not None:
                return self._skip(rec, f"already throttled by action {active.id}")
            if self.policy.is_protected(context):
                return self._skip(rec, "context is protected")
            self._store(rec)
            return self._throttle(rec)

    def manual_release(self, context: Context, reason: str = "") -> ActionRecord:
        """Release the context's latest throttle, on a person's request."""
        with self._lock:
            pending = self._unreleased(context)
            if not pending:
                rec = self._manual(context, RELEASE, reason or "manual release")
                return self._skip(rec, "nothing to release")
            return self._release(pending[-1], reason or "manual release")

    def approve(self, action_id: str, by: str = "") -> ActionRecord:
        """Let an action waiting for approval go ahead, and carry it out."""
        with self._lock:
            rec = self._pending(action_id)
            rec.outcome["approved_by"] = by
            return self._carry_out(rec)

    def reject(self, action_id: str, by: str = "") -> ActionRecord:
        """Refuse a throttle waiting for approval."""
        with self._lock:
            rec = self._pending(action_id)
            rec.state = REJECTED
            rec.outcome["rejected_by"] = by
            self._save(rec)
            return rec

    # Alert handling

    def _on_firing(self, t: Transition) -> None:
        why = self.policy.unqualified(t)
        if why is not None:
            logger.debug("no enforcement fingerprint=%s why=%s", t.fingerprint, why)
            return
        key = episode_key(t.fingerprint, t.starts_at, THROTTLE)
        if self._episode_handled(t):
            return
        now = self.clock()
        reason = t.summary or f"{t.kind} alert {t.fingerprint}"
        rec = self._new(key, t.fingerprint, t.context, THROTTLE, reason, now)
        rec.outcome = {
            "kind": t.kind,
            "severity": t.severity,
            "loop": self.policy.is_loop(t.kind),
        }
        active = self._active(t.context)
        if active is not None:
            # Limitation: a later loop alert leaves a throttled context's mappings on.
            rec.key = f"{key}/skip/active"
            self._skip(rec, f"already throttled by action {active.id}")
            return
        recent = self.log.find(since=now - self.policy.lookback_s())
        refusal = self.policy.refusal(t.context, recent, now)
        if refusal is not None:
            rec.key = f"{key}/skip/{refusal.rule}"
            self._skip(rec, refusal.reason)
            return
        if self.policy.approval:
            rec.state = PENDING_APPROVAL
            if self._store(rec):
                logger.info(
                    "action waits for approval id=%s function=%s",
                    rec.id,
                    rec.context.function,
                )
            return
        if self._store(rec):
            self._throttle(rec)

    def _episode_handled(self, t: Transition) -> bool:
        """Whether a throttle of this alert's episode was already decided.

        The detector may move an open alert's start earlier (evidence read
        late from another partition), never later: a later episode starts
        after this one resolved. So a throttle keyed with the same or a
        later start belongs to this episode, or to a newer one that
        supersedes a stale transition.
        """
        start = round(t.starts_at, 3)
        for rec in self.log.find(fingerprint=t.fingerprint):
            begun = _episode_start(rec.key, t.fingerprint)
            if begun is not None and begun >= start:
                return True
        return False

    def _on_resolved(self, t: Transition) -> None:
        # The episode ran from its (earliest) start to now; a throttle keyed
        # within that span is one of its own, whatever start it first saw.
        first, last = round(t.starts_at, 3), round(t.at, 3)
        for rec in self.log.find(fingerprint=t.fingerprint):
            begun = _episode_start(rec.key, t.fingerprint)
            if begun is None or not first <= begun <= last:
                continue
            if rec.state == PENDING_APPROVAL:
                self._skip(rec, "alert resolved before approval", stored=True)
            elif self.policy.release_on_recovery:
                self._mark_recovered(t.context, rec)

    def _mark_recovered(self, context: Context, only: ActionRecord | None) -> None:
        now = self.clock()
        for rec in self._unreleased(context):
            if only is not None and rec.id != only.id:
                continue
            if "recovered_at" not in rec.outcome:
                rec.outcome["recovered_at"] = now
                self.log.update(rec)
                logger.info(
                    "release scheduled id=%s function=%s",
                    rec.id,
                    context.function,
                )

    # Performing actions

    def _throttle(self, rec: ActionRecord) -> ActionRecord:
        older = [
            r
            for r in self._unreleased(rec.context)
            if r.state == FAILED and r.id != rec.id
        ]
        loop = bool(rec.outcome.get("loop"))

        def call() -> dict[str, Any]:
            return self.hook.throttle(rec.context, rec.reason, loop=loop)

        previous = self._perform(rec, call)
        if previous is None:
            return rec
        # A throttle that failed half way earlier, with no release since,
        # saw the function as it really was; this call may have seen the
        # half-throttled state, so the older record's view wins.
        for old in older:
            previous = {**previous, **old.previous}
        rec.previous = previous
        self._succeed(rec)
        for old in older:
            old.outcome["superseded_by"] = rec.id
            self.log.update(old)
        return rec

    def _release(self, throttle: ActionRecord, reason: str) -> ActionRecord:
        now = self.clock()
        earlier = self._releases_of(throttle)
        base = _release_key(throttle.key)
        key = base if not earlier else f"{base}#{len(earlier) + 1}"
        rec = self._new(
            key, throttle.fingerprint, throttle.context, RELEASE, reason, now
        )
        rec.previous = dict(throttle.previous)
        rec.outcome = {"throttle_id": throttle.id}
        if not self._store(rec):
            return rec
        return self._do_release(rec, throttle)

    def _do_release(self, rec: ActionRecord, throttle: ActionRecord) -> ActionRecord:
        def call() -> dict[str, Any]:
            self.hook.release(rec.context, rec.previous)
            return {}

        if self._perform(rec, call) is not None:
            self._succeed(rec)
            throttle.outcome["released_by"] = rec.id
            self.log.update(throttle)
        return rec

    def _carry_out(self, rec: ActionRecord) -> ActionRecord:
        """Perform a stored action that was waiting for approval."""
        rec.hook = self.hook.name
        if rec.verb == RELEASE:
            pending = self._unreleased(rec.context)
            if not pending:
                return self._skip(rec, "nothing to release", stored=True)
            rec.previous = dict(pending[-1].previous)
            rec.outcome["throttle_id"] = pending[-1].id
            return self._do_release(rec, pending[-1])
        active = self._active(rec.context)
        if active is not None:
            return self._skip(
                rec, f"already throttled by action {active.id}", stored=True
            )
        if self.policy.is_protected(rec.context):
            return self._skip(rec, "context is protected", stored=True)
        return self._throttle(rec)

    def _carry_out_approved(self, now: float) -> None:
        # Another process (an API without an enforcer of its own) may have
        # approved an action; this enforcer carries it out, unless the
        # approval is too old to still say what people want.
        # Limitation: two enforcers ticking on one log may both carry it out.
        for rec in self.log.find(state=APPROVED):
            if rec.updated_at + self.stale_after_s <= now:
                self._skip(rec, "approval expired before it was done", stored=True)
            else:
                self._carry_out(rec)

    def _perform(
        self, rec: ActionRecord, call: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """Run ``call`` with retries; a failure is recorded and gives None.

        On success the record is left ``attempting`` for the caller to
        complete with :meth:`_succeed`.
        """
        rec.state = ATTEMPTING
        try:
            return self._retry(rec, call)
        except _CircuitOpen:
            self._fail(rec, f"circuit open for hook {self.hook.name}", {})
        except HookError as exc:
            if exc.previous and not rec.previous:
                rec.previous = exc.previous
            self._fail(rec, str(exc), {"transient": exc.transient, **exc.detail})
        except Exception as exc:
            # A bug in a hook must end as a failed record, not as an action
            # stuck in ``attempting``.
            logger.exception("hook error id=%s hook=%s", rec.id, self.hook.name)
            self._fail(rec, f"unexpected {type(exc).__name__}: {exc}", {})
        return None

    def _succeed(self, rec: ActionRecord) -> None:
        rec.state = SUCCEEDED
        rec.outcome["after"] = self._read_after(rec.context)
        self._save(rec)
        logger.info(
            "action succeeded id=%s verb=%s function=%s hook=%s attempts=%d",
            rec.id,
            rec.verb,
            rec.context.function,
            self.hook.name,
            rec.attempts,
        )

    def _retry(
        self, rec: ActionRecord, call: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        # Limitation: backoff sleeps in the caller's thread, holding later batches.
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            if not self.breaker.allow():
                raise _CircuitOpen
            rec.attempts += 1
            rec.updated_at = self.clock()
            self.log.update(rec)
            try:
                result = call()
            except HookError as exc:
                if not exc.transient:
                    # The platform answered: it is up, the request was wrong.
                    self.breaker.success()
                    raise
                self.breaker.failure()
                if attempt == self.max_attempts:
                    raise
                logger.warning(
                    "hook retry id=%s attempt=%d wait_s=%s error=%s",
                    rec.id,
                    attempt,
                    delay,
                    exc,
                )
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
            else:
                self.breaker.success()
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read_after(self, context: Context) -> dict[str, Any]:
        # What the platform shows after the action, as a check in the audit
        # trail; a failure here does not undo a succeeded action.
        try:
            return self.hook.read(context)
        except HookError as exc:
            return {"error": str(exc)}

    def _fail(self, rec: ActionRecord, error: str, detail: dict[str, Any]) -> None:
        rec.state = FAILED
        rec.outcome["error"] = error
        if detail:
            rec.outcome["detail"] = detail
        self._save(rec)
        logger.warning(
            "action failed id=%s verb=%s function=%s hook=%s attempts=%d error=%s",
            rec.id,
            rec.verb,
            rec.context.function,
            self.hook.name,
            rec.attempts,
            error,
        )

    # Records

    def _new(
        self,
        key: str,
        fingerprint: str,
        context: Context,
        verb: str,
        reason: str,
        now: float,
    ) -> ActionRecord:
        return ActionRecord(
            id=new_action_id(),
            key=key,
            fingerprint=fingerprint,
            context=context,
            verb=verb,
            hook=self.hook.name,
            state=ATTEMPTING,
            reason=reason,
            created_at=now,
            updated_at=now,
        )

    def _manual(self, context: Context, verb: str, reason: str) -> ActionRecord:
        # Every request of a person is an episode of its own.
        rec = self._new("", "", context, verb, reason, self.clock())
        rec.key = f"manual:{context.key().decode()}:{rec.id}:{verb}"
        return rec

    def _store(self, rec: ActionRecord) -> bool:
        stored = self.log.record(rec)
        if stored and rec.state in FINAL_STATES | {PENDING_APPROVAL}:
            metrics.record_enforcement(rec.hook, rec.verb, rec.state)
        return stored

    def _save(self, rec: ActionRecord) -> None:
        rec.updated_at = self.clock()
        self.log.update(rec)
        if rec.state in FINAL_STATES:
            metrics.record_enforcement(rec.hook, rec.verb, rec.state)

    def _skip(
        self, rec: ActionRecord, reason: str, *, stored: bool = False
    ) -> ActionRecord:
        rec.state = SKIPPED
        rec.outcome["skipped"] = reason
        if stored:
            self._save(rec)
        elif not self._store(rec):
            return rec
        logger.info(
            "action skipped id=%s verb=%s function=%s why=%s",
            rec.id,
            rec.verb,
            rec.context.function,
            reason,
        )
        return rec

    def _pending(self, action_id: str) -> ActionRecord:
        rec = self.log.get(action_id)
        if rec is None:
            raise UnknownAction(f"enforcement: no action with id {action_id}")
        if rec.state != PENDING_APPROVAL:
            raise ActionConflict(
                f"enforcement: action {action_id} is {rec.state}, not"
                f" {PENDING_APPROVAL}"
            )
        return rec

    def _unreleased(self, context: Context | None = None) -> list[ActionRecord]:
        """Throttles that changed something and have not been undone."""
        # Limitation: scans all succeeded and failed actions; slow on a long log.
        found = []
        for state in (SUCCEEDED, FAILED):
            for rec in self.log.find(state=state, context=context):
                if (
                    rec.verb == THROTTLE
                    and (state == SUCCEEDED or rec.previous)
                    and "released_by" not in rec.outcome
                    and "superseded_by" not in rec.outcome
                ):
                    found.append(rec)
        found.sort(key=lambda r: (r.created_at, r.id))
        return found

    def _active(self, context: Context) -> ActionRecord | None:
        for rec in reversed(self._unreleased(context)):
            if rec.state == SUCCEEDED:
                return rec
        return None

    def _releases_of(self, throttle: ActionRecord) -> list[ActionRecord]:
        return [
            r
            for r in self.log.find(context=throttle.context)
            if r.verb == RELEASE and r.outcome.get("throttle_id") == throttle.id
        ]

    def _release_pending(self, throttle: ActionRecord, now: float) -> bool:
        # Wait between tries of a release that failed, and never start one
        # while another is under way.
        for r in self._releases_of(throttle):
            if r.state in (ATTEMPTING, APPROVED):
                return True
            if r.state == FAILED and r.updated_at + self.release_retry_s > now:
                return True
        return False

    def _fail_stale(self, now: float) -> None:
        # Limitation: a crash mid-throttle loses the previous state; release by hand.
        for rec in self.log.find(state=ATTEMPTING):
            if rec.updated_at + self.stale_after_s <= now:
                self._fail(rec, "interrupted: no outcome was recorded", {})


def _episode_start(key: str, fingerprint: str) -> float | None:
    """The episode start in a throttle key made by :func:`episode_key`, if any."""
    head, at, rest = key.partition("@")
    suffix = f":{THROTTLE}"
    if head != fingerprint or not at or not rest.endswith(suffix):
        return None
    try:
        return float(rest[: -len(suffix)])
    except ValueError:
        return None


def _release_key(throttle_key: str) -> str:
    suffix = f":{THROTTLE}"
    if throttle_key.endswith(suffix):
        return throttle_key[: -len(suffix)] + f":{RELEASE}"
    return f"{throttle_key}:{RELEASE}"


def build_enforcer(
    settings: Settings,
    log: ActionLog,
    clock: Callable[[], float] = time.time,
) -> Enforcer:
    """The enforcer the settings ask for, writing to ``log``."""
    try:
        policy = Policy(
            protected=tuple(settings.enforcement_protected),
            max_actions_per_hour=settings.enforcement_max_per_hour,
            max_actions_per_hour_per_account=(
                settings.enforcement_max_per_hour_per_account
            ),
            cooldown_s=settings.enforcement_cooldown_s,
            release_after_s=settings.enforcement_ttl_s or None,
            auto_release_loops=settings.enforcement_release_loops,
            approval=settings.enforcement_approval,
        )
    except ValueError as exc:
        raise ConfigError(f"enforcement settings: {exc}") from exc
    hook = _build_hook(settings, clock)
    logger.info(
        "enforcement mode=%s approval=%s protected=%d",
        settings.enforcement_mode,
        policy.approval,
        len(policy.protected),
    )
    return Enforcer(hook, policy, log, clock)


def _build_hook(settings: Settings, clock: Callable[[], float]) -> Hook:
    mode = settings.enforcement_mode
    if mode == "dry_run":
        return DryRunHook()
    if mode == "webhook":
        if not settings.enforcement_webhook_url:
            raise ConfigError("enforcement_mode webhook needs enforcement_webhook_url")
        if not settings.enforcement_webhook_secret:
            raise ConfigError(
                "enforcement_mode webhook needs enforcement_webhook_secret"
            )
        return WebhookHook(
            settings.enforcement_webhook_url,
            settings.enforcement_webhook_secret,
            clock=clock,
        )
    if mode == "aws_lambda":
        try:
            from detector.enforcement.aws_lambda import AwsLambdaHook, lambda_clients
        except ImportError as exc:
            raise ConfigError(
                f"enforcement_mode aws_lambda needs boto3 (the aws extra): {exc}"
            ) from exc
        if settings.enforcement_ceiling < 0:
            raise ConfigError(
                f"enforcement_ceiling must be >= 0, got {settings.enforcement_ceiling}"
            )
        clients = lambda_clients(settings.enforcement_aws_endpoint_url)
        # The first client loads botocore's Lambda model, which takes about
        # half a second; any region's client does it for all, so it is done
        # now rather than when the first throttle is due.
        clients(os.environ.get("AWS_DEFAULT_REGION") or WARM_REGION)
        return AwsLambdaHook(
            clients,
            ceiling=settings.enforcement_ceiling,
            recursion_terminate=settings.enforcement_recursion_terminate,
        )
    raise ConfigError(
        f"enforcement_mode {mode!r} is not dry_run, aws_lambda or webhook"
    )
