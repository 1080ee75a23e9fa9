"""One error body for every error the API answers, documented on every route.

FastAPI's own validation errors come as ``{"detail": [...]}``, the routes' as ``{"detail":
"..."}``; clients and the schema see one shape: ``detail`` is always a message, and a
validation failure adds the field-by-field ``errors``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("radservice.api")


class ErrorBody(BaseModel):
    """What every error response holds."""

    #: What went wrong, for a person.
    detail: str
    #: For a request that failed validation: each field's problem (location, message, type).
    errors: list[dict[str, Any]] | None = None


_WHY = {
    400: "a malformed request (an unreadable body)",
    401: "no valid bearer token (the body is not read)",
    403: "the caller's role may not do this",
    404: "no such record",
    405: "the method is not allowed on this path (Allow lists the ones that are)",
    409: "the record's state or revision does not allow it now (read it again)",
    413: "the body is larger than its limit",
    422: "the request is not valid (errors says where)",
    503: "the database is busy or unreachable: retry after Retry-After seconds",
}
#: Every route documents every error it may give, with the one body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why} for code, why in _WHY.items()}


def route_of(request: Request) -> str:
    """The route's template for a log line (``/api/v1/studies/{accession}``), never the path
    itself: paths carry accession numbers."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "(no route)"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _bug)


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    """A bug: 500 with the one body; the log names the exception's type (its text may quote
    patient data), the traceback goes to the debug log."""
    log.error("%s %s: internal error %s", request.method, route_of(request), type(exc).__name__)
    log.debug("traceback", exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": message or "invalid request", "errors": jsonable_encoder(errors)},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        # Starlette names only the methods of the first route matching the path; list them all
        allowed = sorted({m for route in request.app.router.routes
                          if route.matches(request.scope)[0] != Match.NONE
                          for m in getattr(route, "methods", None) or ()})
        headers["Allow"] = ", ".join(allowed)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers or None)
