"""The FastAPI application: built from Settings by a factory, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from radservice import __version__
from radservice.api import errors, metrics
from radservice.api.deps import RefusalThrottle, RepeatedReads
from radservice.api.limits import RequestLimits, StrictTransport
from radservice.api.routes import admin, dictations, health, me, reports, signin, stream, web, worklist
from radservice.audit.service import ReadAudit
from radservice.config import Settings
from radservice.db.errors import cause, transient
from radservice.db.session import make_sessionmaker

log = logging.getLogger("radservice.api")
#: Seconds a client is asked to wait before it retries a request the database was too busy for.
RETRY_AFTER_S = 1


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """Build the HTTP API for these settings on this (migrated) database.

    Production mode turns the interactive documentation (``/docs``, ``/redoc``,
    ``/openapi.json``) off.
    """
    production = settings.server.environment == "production"
    app = FastAPI(
        title="radservice",
        version=__version__,
        docs_url=None if production else "/docs",
        redoc_url=None if production else "/redoc",
        openapi_url=None if production else "/openapi.json",
        responses=errors.ERROR_RESPONSES,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    # writers (the live dictation socket, background steps) and the request sessions, which read
    # unless a route begins a write (db.session.begin_write)
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.read_sessionmaker = make_sessionmaker(engine, reader=True)
    app.state.refusals = RefusalThrottle()
    # SQLite has one write lock: the audit rows of reads go through one writer in batches, so
    # that a read never waits for it (docs/design-notes.md). PostgreSQL writes them in the request.
    app.state.read_audit = ReadAudit(app.state.sessionmaker) if engine.dialect.name == "sqlite" else None
    app.state.read_repeats = RepeatedReads()
    # name -> "is it up?"; listeners started beside the API register here for /readyz.
    listeners: dict[str, Callable[[], bool]] = {}
    app.state.listeners = listeners
    # Set by `serve` to wake its outbox senders when a signature queues rows; a no-op elsewhere.
    app.state.outbox_wake = lambda: None
    app.state.metrics = metrics.install(app)
    errors.install(app)
    app.add_exception_handler(DBAPIError, _database_error)
    # outermost: the token and the body's size are checked before anything reads the body
    app.add_middleware(RequestLimits, settings=settings)
    if settings.server.tls_cert is not None and settings.server.hsts_max_age_s:
        app.add_middleware(StrictTransport, max_age_s=settings.server.hsts_max_age_s)
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(signin.router)
    app.include_router(admin.router)
    app.include_router(worklist.router)
    app.include_router(dictations.router)
    app.include_router(stream.router)
    app.include_router(reports.router)
    app.include_router(web.router)
    app.mount("/web", web.files(), name="web")
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    queue: ReadAudit | None = app.state.read_audit
    if queue is not None:
        queue.start()
    try:
        yield
    finally:
        if queue is not None:  # a normal stop writes every audit row still waiting
            await anyio.to_thread.run_sync(queue.close)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database failure as an answer the client can act on, never a 500 with a traceback:
    busy, locked or unreachable is 503 with ``Retry-After``; a write that lost a race to another
    (a unique key taken meanwhile) is 409. The log names the failure's kind, never its values."""
    if transient(exc):
        log.warning("%s %s: database busy or unreachable (%s): 503", request.method, errors.route_of(request),
                    cause(exc))
        return JSONResponse({"detail": "the database is busy or unreachable: retry shortly"},
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, IntegrityError):
        log.warning("%s %s: a concurrent change conflicted (%s): 409", request.method, errors.route_of(request),
                    cause(exc))
        return JSONResponse({"detail": "a concurrent change conflicted with this request: read again and retry"},
                            status_code=status.HTTP_409_CONFLICT)
    log.error("%s %s: database error %s", request.method, errors.route_of(request), cause(exc))
    return JSONResponse({"detail": "internal database error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)
