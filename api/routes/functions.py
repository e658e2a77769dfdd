"""Tracked function contexts and their manual throttle and release."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import CurrentOperator, CurrentViewer, EnforcementDep, StoreDep
from api.routes import NO_NUL, Cursor, Limit, errors
from api.schemas import ActionPublic, FunctionPublic, FunctionsPublic, ManualAction
from api.store import context_of

router = APIRouter(prefix="/functions", tags=["functions"])

ContextKey = Annotated[
    str,
    Path(
        max_length=1024,
        pattern=NO_NUL,
        description="provider/account/region/function/qualifier",
    ),
]
Name = Annotated[str | None, Query(max_length=256, pattern=NO_NUL)]


@router.get("", responses=errors(400))
def read_functions(
    store: StoreDep,
    _viewer: CurrentViewer,
    account: Name = None,
    function: Name = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> FunctionsPublic:
    """Tracked contexts, costliest first: spend rate, baseline, alerts, actions."""
    page = store.list_functions(account, function, limit, cursor or None)
    return FunctionsPublic(
        data=[FunctionPublic.build(r, n) for r, n in page.data],
        count=page.count,
        next_cursor=page.next_cursor,
    )


@router.get("/{context_key:path}", responses=errors(404))
def read_function(
    store: StoreDep, _viewer: CurrentViewer, context_key: ContextKey
) -> FunctionPublic:
    """One tracked context."""
    row, open_alerts = store.get_function(context_key)
    return FunctionPublic.build(row, open_alerts)


@router.post(
    "/{context_key:path}/throttle", status_code=202, responses=errors(404, 409, 502)
)
def throttle_function(
    store: StoreDep,
    enforcement: EnforcementDep,
    operator: CurrentOperator,
    context_key: ContextKey,
    body: ManualAction | None = None,
) -> ActionPublic:
    """Ask for a throttle of this context now; the answer is its action record."""
    row, _ = store.get_function(context_key)
    reason = f"{body.reason if body else 'manual request'} (by {operator.name})"
    return ActionPublic.build(enforcement.manual_throttle(context_of(row), reason))


@router.post(
    "/{context_key:path}/release", status_code=202, responses=errors(404, 409, 502)
)
def release_function(
    store: StoreDep,
    enforcement: EnforcementDep,
    operator: CurrentOperator,
    context_key: ContextKey,
    body: ManualAction | None = None,
) -> ActionPublic:
    """Ask for the release of this context's throttle."""
    row, _ = store.get_function(context_key)
    reason = f"{body.reason if body else 'manual request'} (by {operator.name})"
    return ActionPublic.build(enforcement.manual_release(context_of(row), reason))
