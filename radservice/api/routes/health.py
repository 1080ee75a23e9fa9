"""Liveness, readiness and metrics: what a load balancer, compose or Prometheus polls."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from radservice.db.session import ping

router = APIRouter(tags=["health"])
log = logging.getLogger("radservice.api")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready for traffic: the database answers (listeners join in later issues); else 503."""
    checks: dict[str, Any] = {}
    ready = True
    try:
        ping(request.app.state.engine)
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unreachable"
        ready = False
    for name, is_up in request.app.state.listeners.items():
        checks[name] = "ok" if is_up() else "down"
        ready = ready and is_up()
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text exposition format: counters since start, and the backlog read from the
    database now (a database that does not answer leaves the gauges as they were, and says so)."""
    try:
        with request.app.state.read_sessionmaker() as session:
            request.app.state.metrics.refresh(session)
    except SQLAlchemyError as exc:
        log.warning("metrics: backlog not read: %s", type(exc).__name__)
    response: Response = request.app.state.metrics.render()
    return response
