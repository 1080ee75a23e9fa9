"""The radiologists' page: ``GET /`` and its static files under ``/web/`` (radservice/web/).

Everything the page needs is served from here (a hospital network may have no internet); the
page reads and writes data only through the API. Strict headers: the page runs only its own
scripts and styles, cannot be framed, and sends no referrer.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from radservice.api.deps import SettingsDep

WEB = Path(__file__).resolve().parents[2] / "web"
#: ``npm ci``'s folder beside the package (a checkout); ``web.vendor_dir`` names another.
NODE_MODULES = Path(__file__).resolve().parents[3] / "node_modules"
#: The npm packages' files the page loads (package.json, package-lock.json): name -> path.
VENDOR = {"dictation_support.js": "dictation_support/dist/index.js"}

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag): a new release is picked up at the next load
}

router = APIRouter(include_in_schema=False)


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    """The page: sign-in, worklist, study and report editor."""
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/vendor/{name}", include_in_schema=False)
def vendor(name: str, settings: SettingsDep) -> FileResponse:
    """A front-end package's file, from npm's folder; 404 when it is not installed (the page then
    goes without what it adds)."""
    relative = VENDOR.get(name)
    path = (settings.web.vendor_dir or NODE_MODULES) / relative if relative else None
    if path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{name!r} is not installed (npm ci)")
    return FileResponse(path, media_type="text/javascript; charset=utf-8", headers=SECURITY_HEADERS)


class WebFiles(StaticFiles):
    """The page's scripts and styles, with the page's headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def files() -> WebFiles:
    return WebFiles(directory=WEB)
