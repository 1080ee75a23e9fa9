"""The FastAPI application: built from Settings by a factory, never at import."""

from __future__ import annotations

from fastapi import FastAPI

from radservice import __version__
from radservice.api.routes import health
from radservice.config import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the HTTP API for these settings.

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
    app.include_router(health.router)
    return app
