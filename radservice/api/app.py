"""The FastAPI application: built from Settings by a factory, never at import."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from sqlalchemy import Engine

from radservice import __version__
from radservice.api import metrics
from radservice.api.routes import admin, dictations, health, me, reports, stream, worklist
from radservice.config import Settings
from radservice.db.session import make_sessionmaker


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
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    # name -> "is it up?"; listeners started beside the API register here for /readyz.
    listeners: dict[str, Callable[[], bool]] = {}
    app.state.listeners = listeners
    # Set by `serve` to wake its outbox senders when a signature queues rows; a no-op elsewhere.
    app.state.outbox_wake = lambda: None
    app.state.metrics = metrics.install(app)
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(admin.router)
    app.include_router(worklist.router)
    app.include_router(dictations.router)
    app.include_router(stream.router)
    app.include_router(reports.router)
    return app
