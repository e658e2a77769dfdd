"""The enforcement audit trail, and approval of actions that wait for it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from api.deps import CurrentOperator, CurrentViewer, EnforcementDep, StoreDep
from api.routes import NO_NUL, Cursor, Limit, errors
from api.schemas import ActionPublic, ActionsPublic, epoch
from api.store import ActionQuery, NotFoundError, SqlActionLog, action_record

router = APIRouter(prefix="/actions", tags=["actions"])

ActionState = Literal[
    "pending_approval",
    "approved",
    "attempting",
    "succeeded",
    "failed",
    "rejected",
    "skipped",
]
ActionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


@router.get("", responses=errors(400))
def read_actions(
    store: StoreDep,
    _viewer: CurrentViewer,
    state: Annotated[list[ActionState] | None, Query()] = None,
    verb: Literal["throttle", "release"] | None = None,
    context_key: Annotated[str | None, Query(max_length=1024, pattern=NO_NUL)] = None,
    fingerprint: Annotated[str | None, Query(pattern=r"^[0-9a-f]{16}$")] = None,
    since: Annotated[datetime | None, Query(description="created_at >= since")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ActionsPublic:
    """The audit trail of enforcement, newest first."""
    query = ActionQuery(
        states=tuple(state or ()),
        verb=verb,
        context_key=context_key,
        fingerprint=fingerprint,
        since=None if since is None else epoch(since),
        limit=limit,
        cursor=cursor or None,
    )
    page = store.list_actions(query)
    return ActionsPublic(
        data=[ActionPublic.build(action_record(r)) for r in page.data],
        count=page.count,
        next_cursor=page.next_cursor,
    )


@router.get("/{action_id}", responses=errors(404))
def read_action(
    store: StoreDep, _viewer: CurrentViewer, action_id: ActionId
) -> ActionPublic:
    """One action and how it went."""
    rec = SqlActionLog(store).get(action_id)
    if rec is None:
        raise NotFoundError(f"action {action_id!r}: no such action")
    return ActionPublic.build(rec)


@router.post("/{action_id}/approve", responses=errors(404, 409, 502))
def approve_action(
    enforcement: EnforcementDep, operator: CurrentOperator, action_id: ActionId
) -> ActionPublic:
    """Let an action that waits for approval go ahead."""
    return ActionPublic.build(enforcement.approve(action_id, by=operator.name))


@router.post("/{action_id}/reject", responses=errors(404, 409))
def reject_action(
    enforcement: EnforcementDep, operator: CurrentOperator, action_id: ActionId
) -> ActionPublic:
    """Refuse an action that waits for approval."""
    return ActionPublic.build(enforcement.reject(action_id, by=operator.name))
