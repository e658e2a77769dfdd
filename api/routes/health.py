"""Probes (no key needed) and the Prometheus exposition (a key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import CurrentViewer, StoreDep
from api.routes import COMMON, errors
from api.schemas import ErrorPublic, HealthPublic
from detector import metrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health() -> HealthPublic:
    """The process is up."""
    return HealthPublic(status="ok")


@router.get("/readyz", response_model=HealthPublic, responses=errors(503))
async def read_readiness(request: Request, store: StoreDep) -> Any:
    """The database answers, and the consumer runs if this process has one."""
    database = await run_in_threadpool(store.ping)
    running = request.app.state.consumer_running
    consumer: bool | None = running() if callable(running) else running
    problems = []
    if not database:
        problems.append("the database does not answer")
    if consumer is False:
        problems.append("the consumer is not running")
    if problems:
        body = ErrorPublic(status=503, code="not_ready", message="; ".join(problems))
        return JSONResponse(body.model_dump(), status_code=503)
    return HealthPublic(status="ready", database=database, consumer_running=consumer)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text"},
        **COMMON,
    },
)
def read_metrics(_viewer: CurrentViewer) -> Response:
    """Every dowguard metric of this process, in Prometheus text format."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
