"""Alerts: the list with filters and cursors, one alert, ack, resolve, comments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import CurrentOperator, CurrentViewer, StoreDep
from api.routes import NO_NUL, Cursor, Limit, errors
from api.schemas import (
    AlertDetailPublic,
    AlertNote,
    AlertPublic,
    AlertsPublic,
    AlertState,
    CommentCreate,
    CommentPublic,
    Severity,
    epoch,
)
from api.store import AlertQuery

router = APIRouter(prefix="/alerts", tags=["alerts"])

Fingerprint = Annotated[
    str, Path(pattern=r"^[0-9a-f]{16}$", description="The alert's fingerprint.")
]
Name = Annotated[str | None, Query(max_length=256, pattern=NO_NUL)]
Kind = Annotated[str, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


@router.get("", response_model=AlertsPublic, responses=errors(400))
async def read_alerts(
    store: StoreDep,
    _viewer: CurrentViewer,
    state: Annotated[list[AlertState] | None, Query()] = None,
    kind: Annotated[list[Kind] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    account: Name = None,
    function: Name = None,
    since: Annotated[datetime | None, Query(description="starts_at >= since")] = None,
    until: Annotated[datetime | None, Query(description="starts_at < until")] = None,
    sort: Literal["starts_at", "cost_usd"] = "starts_at",
    order: Literal["asc", "desc"] = "desc",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """List alerts, newest first unless told otherwise, one page at a time."""
    query = AlertQuery(
        states=tuple(state or ()),
        kinds=tuple(kind or ()),
        severities=tuple(severity or ()),
        account=account,
        function=function,
        since=None if since is None else epoch(since),
        until=None if until is None else epoch(until),
        sort=sort,
        order=order,
        limit=limit,
        cursor=cursor or None,
    )
    if store.in_process:
        # SQLite answers from this process's CPU, like the rest of the work:
        # a thread would add nothing but a fight for the GIL, which under
        # load costs more than the query.
        page = store.list_alerts(query)
    else:
        page = await run_in_threadpool(store.list_alerts, query)
    return Response(AlertsPublic.render(page), media_type="application/json")


@router.get("/{fingerprint}", responses=errors(404))
def read_alert(
    store: StoreDep, _viewer: CurrentViewer, fingerprint: Fingerprint
) -> AlertDetailPublic:
    """One alert with its evidence, its transitions and its comments."""
    return AlertDetailPublic.build_detail(store.get_alert(fingerprint))


@router.post("/{fingerprint}/ack", responses=errors(404, 409))
def ack_alert(
    store: StoreDep,
    operator: CurrentOperator,
    fingerprint: Fingerprint,
    note: AlertNote | None = None,
) -> AlertPublic:
    """Acknowledge a firing alert; the comment, if any, is kept with it."""
    comment = note.comment if note else ""
    return AlertPublic.build(store.acknowledge(fingerprint, operator.name, comment))


@router.post("/{fingerprint}/resolve", responses=errors(404))
def resolve_alert(
    store: StoreDep,
    operator: CurrentOperator,
    fingerprint: Fingerprint,
    note: AlertNote | None = None,
) -> AlertPublic:
    """Resolve an alert by hand; it stays resolved until a new episode opens."""
    comment = note.comment if note else ""
    return AlertPublic.build(store.resolve(fingerprint, operator.name, comment))


@router.post("/{fingerprint}/comments", status_code=201, responses=errors(404))
def create_comment(
    store: StoreDep,
    operator: CurrentOperator,
    fingerprint: Fingerprint,
    body: CommentCreate,
) -> CommentPublic:
    """Leave a comment on an alert."""
    row = store.add_comment(fingerprint, operator.name, body.comment)
    return CommentPublic.build(row)
