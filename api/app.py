"""The FastAPI application: routers, the error model, auth, and its wiring.

``create_app(settings)`` builds everything from settings; the daemon passes
its own store and enforcer, and tests pass theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.alertmanager import Forwarder
from api.deps import Enforcement, PendingActions
from api.routes import (
    COMMON,
    actions,
    alerts,
    functions,
    health,
    silences,
    whoami,
)
from api.schemas import ErrorPublic
from api.security import DEV_KEY, AuthMiddleware, KeyResolver
from api.store import (
    ConflictError,
    InvalidCursorError,
    NotFoundError,
    SqlActionLog,
    SqlStore,
)
from detector.enforcement.base import ActionConflict, UnknownAction
from dowguard.config import Settings, load_settings
from dowguard.errors import EnforcementError, StorageError

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: How often the planner statistics of the alerts table are refreshed.
STATISTICS_INTERVAL_S = 3600.0

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    502: "enforcement_failed",
    503: "storage_unavailable",
}

#: Which of our errors answer with which status.
ERROR_STATUS: dict[type[Exception], int] = {
    InvalidCursorError: 400,
    NotFoundError: 404,
    UnknownAction: 404,
    ConflictError: 409,
    ActionConflict: 409,
    EnforcementError: 502,
    StorageError: 503,
}


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorPublic(status=status, code=CODES.get(status, "error"), message=message)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def set_consumer_running(app: FastAPI, running: bool | Callable[[], bool]) -> None:
    """Tell /readyz whether this process's Kafka consumer runs.

    A callable is asked at each request: the daemon that serves the API in
    its own process passes one that reads its consumer's state.
    """
    app.state.consumer_running = running


def create_app(
    settings: Settings | None = None,
    *,
    store: SqlStore | None = None,
    enforcement: Enforcement | None = None,
    forwarder: Forwarder | None = None,
) -> FastAPI:
    """The API over ``store`` (by default the settings' database).

    Without ``enforcement``, manual throttles wait in the audit trail for an
    enforcer; with ``forwarder``, open alerts are re-sent to Alertmanager
    while the app runs.
    """
    settings = settings or load_settings()
    owns_store = store is None
    store = store or SqlStore(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if forwarder is not None:
            forwarder.start()
        statistics = asyncio.create_task(_refresh_statistics(store))
        try:
            yield
        finally:
            statistics.cancel()
            if forwarder is not None:
                forwarder.stop()
            if owns_store:
                store.close()

    app = FastAPI(
        title="dowguard",
        summary="Denial-of-Wallet alerts, silences, functions and enforcement.",
        version="1",
        lifespan=lifespan,
        # Operation ids are the handler names (read_alerts, ack_alert, ...).
        generate_unique_id_function=lambda route: route.name,
        # dowguard exports Prometheus metrics, not OpenTelemetry; this skips
        # FastAPI's per-request check for configured OpenTelemetry providers.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.store = store
    app.state.enforcement = enforcement or PendingActions(
        SqlActionLog(store), store.clock
    )
    app.state.consumer_running = None
    for module in (alerts, silences, functions, actions, whoami):
        app.include_router(module.router, prefix=API_PREFIX, responses=COMMON)
    app.include_router(health.router)
    _add_error_handlers(app)
    if settings.dev_mode:
        logger.warning("api dev mode: the built-in key %s is an admin", DEV_KEY)
    app.add_middleware(
        AuthMiddleware, resolver=KeyResolver(store, dev_mode=settings.dev_mode)
    )
    return app


async def _refresh_statistics(store: SqlStore) -> None:
    # The alert table grows while the API runs; plans follow its statistics.
    while True:
        await asyncio.sleep(STATISTICS_INTERVAL_S)
        try:
            await run_in_threadpool(store.optimize)
        except StorageError as exc:
            logger.warning("statistics refresh failed error=%s", exc)


def _add_error_handlers(app: FastAPI) -> None:
    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, _summary(exc.errors()))

    async def on_ours(request: Request, exc: Exception) -> JSONResponse:
        status = next(
            code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind)
        )
        if status >= 500:
            logger.warning(
                "request failed method=%s path=%s status=%d error=%s",
                request.method,
                request.url.path,
                status,
                exc,
            )
        return error_response(status, str(exc))

    async def on_other(request: Request, exc: Exception) -> JSONResponse:
        logger.error(
            "request crashed method=%s path=%s",
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return error_response(500, "internal error; see the server log")

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    for kind in ERROR_STATUS:
        app.add_exception_handler(kind, on_ours)
    app.add_exception_handler(Exception, on_other)


def _summary(errors: Any) -> str:
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
