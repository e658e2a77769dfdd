"""What routes depend on: the store, the caller, the enforcement entry points.

Routes take these through the ``Annotated`` aliases below; tests replace them
with ``app.dependency_overrides``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.security import ADMIN, OPERATOR, VIEWER, Principal
from api.store import SqlActionLog, SqlStore
from detector.enforcement.audit import (
    APPROVED,
    PENDING_APPROVAL,
    REJECTED,
    RELEASE,
    THROTTLE,
    ActionRecord,
    new_action_id,
)
from detector.enforcement.base import ActionConflict, UnknownAction
from dowguard.config import Settings
from ingest.events import Context

logger = logging.getLogger(__name__)

# Declares the scheme in OpenAPI; the check itself is AuthMiddleware's.
bearer = HTTPBearer(auto_error=False, description="An API key: `dowguard keys`.")


class Enforcement(Protocol):
    """The people's side of enforcement, as the Enforcer offers it."""

    def manual_throttle(self, context: Context, reason: str) -> ActionRecord: ...

    def manual_release(self, context: Context, reason: str = "") -> ActionRecord: ...

    def approve(self, action_id: str, by: str = "") -> ActionRecord: ...

    def reject(self, action_id: str, by: str = "") -> ActionRecord: ...


class PendingActions:
    """Enforcement for an API with no enforcer: requests wait in the audit trail.

    Manual throttles and releases are recorded as pending approval; approving
    one marks it approved for an enforcer to carry out.
    """

    # Limitation: approving here only marks the record; an enforcer acts on it.

    def __init__(
        self, log: SqlActionLog, clock: Callable[[], float] = time.time
    ) -> None:
        self.log = log
        self.clock = clock

    def manual_throttle(self, context: Context, reason: str) -> ActionRecord:
        return self._request(context, THROTTLE, reason)

    def manual_release(self, context: Context, reason: str = "") -> ActionRecord:
        return self._request(context, RELEASE, reason or "manual release")

    def approve(self, action_id: str, by: str = "") -> ActionRecord:
        return self._decide(action_id, APPROVED, {"approved_by": by})

    def reject(self, action_id: str, by: str = "") -> ActionRecord:
        return self._decide(action_id, REJECTED, {"rejected_by": by})

    def _request(self, context: Context, verb: str, reason: str) -> ActionRecord:
        now = self.clock()
        action_id = new_action_id()
        rec = ActionRecord(
            id=action_id,
            key=f"manual:{verb}:{action_id}",
            fingerprint="",
            context=context,
            verb=verb,
            hook="none",
            state=PENDING_APPROVAL,
            reason=reason,
            created_at=now,
            updated_at=now,
            outcome={"manual": True},
        )
        self.log.record(rec)
        return rec

    def _decide(self, action_id: str, state: str, note: dict[str, str]) -> ActionRecord:
        rec = self.log.get(action_id)
        if rec is None:
            raise UnknownAction(f"action {action_id}: no such action")
        if rec.state != PENDING_APPROVAL:
            raise ActionConflict(
                f"action {action_id}: is {rec.state}, not {PENDING_APPROVAL}"
            )
        rec.state = state
        rec.updated_at = self.clock()
        rec.outcome |= note
        self.log.update(rec)
        logger.info("action decided id=%s state=%s", action_id, state)
        return rec


async def get_store(request: Request) -> SqlStore:
    store: SqlStore = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_enforcement(request: Request) -> Enforcement:
    enforcement: Enforcement = request.app.state.enforcement
    return enforcement


def _principal(request: Request, role: str) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "a bearer API key is required")
    if not principal.allows(role):
        raise HTTPException(403, f"needs role {role}, key has {principal.role}")
    return principal


async def current_viewer(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    return _principal(request, VIEWER)


async def current_operator(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    return _principal(request, OPERATOR)


async def current_admin(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    return _principal(request, ADMIN)


# The dependencies are coroutines although they do no I/O: FastAPI runs a
# plain function dependency in its thread pool, one hop per dependency.
StoreDep = Annotated[SqlStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EnforcementDep = Annotated[Enforcement, Depends(get_enforcement)]
CurrentViewer = Annotated[Principal, Depends(current_viewer)]
CurrentOperator = Annotated[Principal, Depends(current_operator)]
CurrentAdmin = Annotated[Principal, Depends(current_admin)]
