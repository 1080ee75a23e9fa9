"""Limits checked before a request body is read: the caller's token, then the body's size.

FastAPI reads (and parses) a body before it resolves a route's dependencies, so an anonymous
client could make the API read a gigabyte before the 401. This ASGI middleware runs first: a
request with a body and no valid token is answered 401 unread; a declared length over the
route's limit is 413 unread; a body that streams past it (chunked, or lying about its length)
is cut off with 413 as soon as it does. Uploads of dictations may be ``storage.max_audio_mb``;
every other body ``server.max_body_kb``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import cookie_parser

from radservice.api.deps import SESSION_COOKIE, record_refusal
from radservice.audit import service as audit
from radservice.config import Settings
from radservice.db.errors import cause
from radservice.users import service as users
from radservice.users import signin

log = logging.getLogger("radservice.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The route whose body is audio (multipart): it may be as large as storage.max_audio_mb.
_UPLOAD = re.compile(r"^/api/v1/studies/[^/]+/dictations/?$")
#: Signing in on the page: a body (username, password) and, by nature, no credentials yet.
SIGN_IN_PATH = "/api/v1/session"
#: Room for the multipart envelope around the audio (boundaries, headers, the section field).
_ENVELOPE = 64 << 10


class RequestLimits:
    def __init__(self, app: App, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit_for(self, path: str) -> int:
        if _UPLOAD.match(path):
            return (self.settings.storage.max_audio_mb << 20) + _ENVELOPE
        return self.settings.server.max_body_kb << 10

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        token = audit.client_address.set(client[0] if client else None)
        try:
            if scope["type"] == "http":
                await self._http(scope, receive, _no_store(send) if scope.get("path", "").startswith("/api/") else send)
            else:  # a WebSocket authenticates in its route; its audit rows name the client too
                await self.app(scope, receive, send)
        finally:
            audit.client_address.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        has_body = scope["method"] in ("POST", "PUT", "PATCH") and (
            headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers)
        path = scope.get("path", "")
        if not has_body or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        try:
            known = await anyio.to_thread.run_sync(self._authenticated, scope, headers)
        except SQLAlchemyError as exc:  # outside the app's handlers: answered here, as they would
            log.warning("%s: database busy or unreachable while authenticating (%s): 503", scope["method"],
                        cause(exc))
            await _answer(send, 503, "the database is busy or unreachable: retry shortly", [(b"retry-after", b"1")])
            return
        if not known:
            await _answer(send, 401, "not signed in, or an invalid, expired or revoked token or session (send "
                          "'Authorization: Bearer TOKEN', or sign in on the page); the body was not read",
                          [(b"www-authenticate", b"Bearer")])
            return
        limit = self.limit_for(path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, f"request body larger than the limit of {_size(limit)}")
            return
        received = 0
        started = cut = False

        async def counted() -> Message:
            # Past the limit: answer 413 now and tell the app the client left (an exception here
            # would become FastAPI's 400 "error parsing the body").
            nonlocal received, cut, started
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    if not started:
                        started = True
                        await _answer(send, 413, f"request body larger than the limit of {_size(limit)}")
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if cut:
                return  # the 413 went out; what the app answers to the "disconnect" is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not cut:
                raise

    def _authenticated(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Is the bearer token, or the page's session cookie, valid? A refusal is audited (with
        the client's address, never the token). Signing in (``POST /api/v1/session``) has no
        credentials yet: only its size is limited."""
        if scope["method"] == "POST" and scope.get("path", "").rstrip("/") == SIGN_IN_PATH:
            return True
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        cookie = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        factory = scope["app"].state.read_sessionmaker
        with factory() as session:
            if scheme.lower() == "bearer" and credentials.strip():
                if users.authenticate(session=session, token=credentials.strip()) is not None:
                    return True
            elif cookie:
                policy = signin.Policy.of(scope["app"].state.settings.auth)
                if signin.session_user(session=session, cookie=cookie, policy=policy) is not None:
                    return True
            reason = "bad token" if credentials.strip() else "session ended" if cookie else "no token"
            record_refusal(session, scope["app"].state.refusals, actor="anonymous", method=scope["method"],
                           path=scope.get("path", ""), reason=reason)
        return False


def _no_store(send: Send) -> Send:
    """API answers carry patient data (and now come to browsers): never kept in a cache."""
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
            message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
        await send(message)
    return sending


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


async def _answer(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class StrictTransport:
    """``Strict-Transport-Security`` on every HTTPS response (RFC 6797): a browser that has seen it
    never again goes to this host in plain HTTP, so a session cookie cannot leak to a downgrade."""

    def __init__(self, app: App, max_age_s: int) -> None:
        self.app = app
        self.header = (b"strict-transport-security", f"max-age={max_age_s}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def with_header(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, with_header)
