"""The public JSON shapes of the API, kept apart from the table models.

Times go out as RFC 3339 in UTC; builders turn store rows into these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, Field, model_validator

from api.store import (
    AlertDetail,
    AlertView,
    Matcher,
    Page,
    context_of,
    silence_state,
)
from api.tables import CommentRow, FunctionRow, SilenceRow, TransitionRow
from detector.enforcement.audit import ActionRecord


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it at the edge on every backend.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: A string that any database can store.
Text = Annotated[str, AfterValidator(_no_nul)]

AlertState = Literal["open", "acknowledged", "resolved", "silenced"]
SilenceState = Literal["pending", "active", "expired"]
Severity = Literal["info", "warning", "critical"]

LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


#: Datetimes of recently shown epoch times. Lists are read over and over
#: (dashboards poll the same pages), and making a datetime costs more than
#: writing it out; the memo is emptied when full.
_MOMENTS: dict[float, datetime] = {}
MOMENT_MEMO_SIZE = 16_384


def moment(ts: float) -> datetime:
    found = _MOMENTS.get(ts)
    if found is None:
        if len(_MOMENTS) >= MOMENT_MEMO_SIZE:
            _MOMENTS.clear()
        found = _MOMENTS[ts] = datetime.fromtimestamp(ts, tz=UTC)
    return found


def moment_or_none(ts: float | None) -> datetime | None:
    return None if ts is None else moment(ts)


def epoch(value: datetime) -> float:
    """Epoch seconds of a datetime; one without a zone is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# The body of every failure.
class ErrorPublic(BaseModel):
    status: int = Field(description="The HTTP status code, repeated.")
    code: str = Field(description="A stable machine-readable error code.")
    message: str = Field(description="What was wrong, for people.")


# A function context as five parts.
class ContextPublic(BaseModel):
    provider: str
    account: str
    region: str
    function: str
    qualifier: str


# An alert in lists.
class AlertPublic(BaseModel):
    fingerprint: str
    kind: str
    severity: str
    status: Literal["firing", "resolved"] = Field(description="What the detector says.")
    state: AlertState = Field(description="Status with acks and silences applied.")
    context_key: str
    context: ContextPublic
    labels: dict[str, str]
    annotations: dict[str, str]
    cost_usd: float
    starts_at: datetime
    ends_at: datetime | None
    updated_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    resolved_by: str | None
    silenced_by: list[str]

    @classmethod
    def build(cls, view: AlertView) -> AlertPublic:
        return cls.model_validate(alert_document(view))


def alert_document(view: AlertView) -> dict[str, Any]:
    """An alert as AlertPublic's fields, ready for validation."""
    row = view.row
    labels = {str(k): str(v) for k, v in row.labels.items()}
    annotations = {str(k): str(v) for k, v in row.annotations.items()}
    return _document(view, labels, annotations)


def _document(view: AlertView, labels: Any, annotations: Any) -> dict[str, Any]:
    row = view.row
    return {
        "fingerprint": row.fingerprint,
        "kind": row.kind,
        "severity": row.severity,
        "status": row.status,
        "state": view.state,
        "context_key": row.context_key,
        "context": {
            "provider": row.provider,
            "account": row.account,
            "region": row.region,
            "function": row.function,
            "qualifier": row.qualifier,
        },
        "labels": labels,
        "annotations": annotations,
        "cost_usd": row.cost_usd,
        "starts_at": moment(row.starts_at),
        "ends_at": moment_or_none(row.ends_at),
        "updated_at": moment(row.updated_at),
        "acked_at": moment_or_none(row.acked_at),
        "acked_by": row.acked_by,
        "resolved_by": row.resolved_by,
        "silenced_by": list(view.silenced_by),
    }


# One page of alerts.
class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    count: int = Field(description="How many alerts match, over all pages.")
    next_cursor: str | None = Field(description="Pass as cursor for the next page.")

    @staticmethod
    def render(page: Page[AlertView]) -> bytes:
        """The page as AlertsPublic JSON, without building models on the way.

        The busiest route: building and validating fifty nested models per
        request cost more than the queries. Times come out as pydantic
        writes them (RFC 3339, ``Z``); a test holds the two renderings equal.
        """
        # Labels and annotations go out as the JSON text the store wrote
        # (string maps, as AlertPublic declares) without a decode/encode trip.
        data = [
            _document(
                v,
                orjson.Fragment(v.row.labels_json),
                orjson.Fragment(v.row.annotations_json),
            )
            for v in page.data
        ]
        body = {
            "data": data,
            "count": page.count,
            "next_cursor": page.next_cursor,
        }
        return orjson.dumps(body, option=orjson.OPT_UTC_Z)


# One stored transition of an alert.
class TransitionPublic(BaseModel):
    seq: int
    event: str
    at: datetime
    severity: str
    cost_usd: float
    summary: str
    evidence: dict[str, Any]

    @classmethod
    def build(cls, row: TransitionRow) -> TransitionPublic:
        payload = row.payload
        return cls(
            seq=row.seq,
            event=row.event,
            at=moment(row.at),
            severity=str(payload.get("severity", "")),
            cost_usd=float(payload.get("cost_usd", 0.0)),
            summary=str(payload.get("summary", "")),
            evidence=dict(payload.get("evidence") or {}),
        )


# A note on an alert.
class CommentPublic(BaseModel):
    id: int
    action: Literal["comment", "ack", "resolve"]
    author: str
    body: str
    created_at: datetime

    @classmethod
    def build(cls, row: CommentRow) -> CommentPublic:
        return cls(
            id=row.id,
            action=row.action,  # type: ignore[arg-type]
            author=row.author,
            body=row.body,
            created_at=moment(row.created_at),
        )


# One alert with its evidence, history and comments.
class AlertDetailPublic(AlertPublic):
    evidence: dict[str, Any]
    transitions: list[TransitionPublic]
    comments: list[CommentPublic]

    @classmethod
    def build_detail(cls, detail: AlertDetail) -> AlertDetailPublic:
        return cls(
            **alert_document(detail.view),
            evidence=detail.evidence,
            transitions=[TransitionPublic.build(t) for t in detail.transitions],
            comments=[CommentPublic.build(c) for c in detail.comments],
        )


# The body of ack and resolve: an optional note.
class AlertNote(BaseModel):
    comment: Text = Field("", max_length=10_000)


# The body of a comment.
class CommentCreate(BaseModel):
    comment: Text = Field(min_length=1, max_length=10_000)


# One matcher of a silence, Alertmanager's shape.
class MatcherPublic(BaseModel):
    name: str = Field(pattern=LABEL_NAME, max_length=128)
    value: Text = Field(max_length=1024)
    isRegex: bool = False
    isEqual: bool = True

    @model_validator(mode="after")
    def _regex_compiles(self) -> MatcherPublic:
        self.to_matcher()
        return self

    def to_matcher(self) -> Matcher:
        return Matcher(self.name, self.value, self.isRegex, self.isEqual)


# The body of a new silence.
class SilenceCreate(BaseModel):
    matchers: list[MatcherPublic] = Field(min_length=1, max_length=32)
    starts_at: datetime | None = Field(None, description="Default: now.")
    ends_at: datetime
    created_by: Text = Field(min_length=1, max_length=256)
    comment: Text = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _sane(self) -> SilenceCreate:
        if self.starts_at is not None and epoch(self.ends_at) <= epoch(self.starts_at):
            raise ValueError("ends_at must be after starts_at")
        # As Alertmanager does: a silence must not match every alert.
        if all(m.to_matcher().matches({}) for m in self.matchers):
            raise ValueError("at least one matcher must not match the empty string")
        return self


# A silence and its state now.
class SilencePublic(BaseModel):
    id: str
    state: SilenceState
    matchers: list[MatcherPublic]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def build(cls, row: SilenceRow, now: float) -> SilencePublic:
        return cls(
            id=row.id,
            state=silence_state(row, now),  # type: ignore[arg-type]
            matchers=[MatcherPublic(**m) for m in row.matchers],
            starts_at=moment(row.starts_at),
            ends_at=moment(row.ends_at),
            created_by=row.created_by,
            comment=row.comment,
            created_at=moment(row.created_at),
            updated_at=moment(row.updated_at),
        )


class SilencesPublic(BaseModel):
    data: list[SilencePublic]
    count: int
    next_cursor: str | None


# The latest enforcement action of a function.
class EnforcementPublic(BaseModel):
    action_id: str
    verb: str
    state: str
    at: datetime | None


# A tracked function context.
class FunctionPublic(BaseModel):
    context_key: str
    context: ContextPublic
    updated_at: datetime
    cost_usd_per_hour: float
    baseline_usd_per_hour: float
    invocations_per_s: float
    open_alerts: int = Field(description="Firing alerts of this context.")
    enforcement: EnforcementPublic | None

    @classmethod
    def build(cls, row: FunctionRow, open_alerts: int) -> FunctionPublic:
        enforcement = None
        if row.enforcement_action_id is not None:
            enforcement = EnforcementPublic(
                action_id=row.enforcement_action_id,
                verb=row.enforcement_verb or "",
                state=row.enforcement_state or "",
                at=moment_or_none(row.enforcement_at),
            )
        return cls(
            context_key=row.context_key,
            context=ContextPublic(**context_of(row)._asdict()),
            updated_at=moment(row.updated_at),
            cost_usd_per_hour=row.cost_usd_per_hour,
            baseline_usd_per_hour=row.baseline_usd_per_hour,
            invocations_per_s=row.invocations_per_s,
            open_alerts=open_alerts,
            enforcement=enforcement,
        )


class FunctionsPublic(BaseModel):
    data: list[FunctionPublic]
    count: int
    next_cursor: str | None


# The body of a manual throttle or release.
class ManualAction(BaseModel):
    reason: Text = Field("manual request", max_length=1000)


# The body of an approval or a rejection.
class ActionDecision(BaseModel):
    comment: Text = Field("", max_length=1000)


# One entry of the enforcement audit trail.
class ActionPublic(BaseModel):
    id: str
    key: str
    fingerprint: str
    context_key: str
    context: ContextPublic
    verb: str
    hook: str
    state: str
    reason: str
    created_at: datetime
    updated_at: datetime
    attempts: int
    previous: dict[str, Any]
    outcome: dict[str, Any]

    @classmethod
    def build(cls, rec: ActionRecord) -> ActionPublic:
        return cls(
            id=rec.id,
            key=rec.key,
            fingerprint=rec.fingerprint,
            context_key="/".join(rec.context),
            context=ContextPublic(**rec.context._asdict()),
            verb=rec.verb,
            hook=rec.hook,
            state=rec.state,
            reason=rec.reason,
            created_at=moment(rec.created_at),
            updated_at=moment(rec.updated_at),
            attempts=rec.attempts,
            previous=dict(rec.previous),
            outcome=dict(rec.outcome),
        )


class ActionsPublic(BaseModel):
    data: list[ActionPublic]
    count: int
    next_cursor: str | None


# The key a request carries, as the caller can know it.
class PrincipalPublic(BaseModel):
    name: str
    role: Literal["viewer", "operator", "admin"]


# What the probes answer when all is well.
class HealthPublic(BaseModel):
    status: Literal["ok", "ready"]
    database: bool | None = None
    consumer_running: bool | None = None
