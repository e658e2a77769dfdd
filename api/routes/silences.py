"""Silences, Alertmanager style: matchers over alert labels for a time window."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import CurrentOperator, CurrentViewer, StoreDep
from api.routes import Cursor, Limit, errors
from api.schemas import (
    SilenceCreate,
    SilencePublic,
    SilencesPublic,
    SilenceState,
    epoch,
)

router = APIRouter(prefix="/silences", tags=["silences"])

SilenceId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


@router.post("", status_code=201)
def create_silence(
    store: StoreDep, _operator: CurrentOperator, body: SilenceCreate
) -> SilencePublic:
    """Mute the alerts the matchers select, from starts_at (or now) to ends_at."""
    now = store.clock()
    starts_at = now if body.starts_at is None else epoch(body.starts_at)
    ends_at = epoch(body.ends_at)
    row = store.create_silence(
        [m.to_matcher() for m in body.matchers],
        starts_at,
        ends_at,
        body.created_by,
        body.comment,
    )
    return SilencePublic.build(row, now)


@router.get("", responses=errors(400))
def read_silences(
    store: StoreDep,
    _viewer: CurrentViewer,
    state: Annotated[SilenceState | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> SilencesPublic:
    """List silences, newest first, optionally only pending, active or expired."""
    page = store.list_silences(state, limit, cursor or None)
    now = store.clock()
    return SilencesPublic(
        data=[SilencePublic.build(r, now) for r in page.data],
        count=page.count,
        next_cursor=page.next_cursor,
    )


@router.get("/{silence_id}", responses=errors(404))
def read_silence(
    store: StoreDep, _viewer: CurrentViewer, silence_id: SilenceId
) -> SilencePublic:
    """One silence and its state now."""
    return SilencePublic.build(store.get_silence(silence_id), store.clock())


@router.delete("/{silence_id}", responses=errors(404))
def expire_silence(
    store: StoreDep, _operator: CurrentOperator, silence_id: SilenceId
) -> SilencePublic:
    """Expire a silence now (a pending one never starts); it is kept for audit."""
    return SilencePublic.build(store.expire_silence(silence_id), store.clock())
