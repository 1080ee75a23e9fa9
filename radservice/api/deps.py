"""Dependencies shared by the routes: a database session, the caller, role checks."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path as PathType
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from radservice.audit import service as audit
from radservice.config import Settings
from radservice.db.errors import cause
from radservice.db.session import begin_write
from radservice.pipeline.compose import Templates
from radservice.users import service as users
from radservice.users import signin
from radservice.users.models import Role, User
from radservice.worklist import service as worklist
from radservice.worklist.models import Study

log = logging.getLogger("radservice.api")
_bearer = HTTPBearer(auto_error=False, description="An API token from `radservice user add`.")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: it reads without taking a write lock (SQLite); a route that writes
    calls ``db.session.begin_write`` first and commits what it means to keep."""
    session: Session = request.app.state.read_sessionmaker()
    try:
        yield session
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings)]
#: A row id in a path: the database's integer range (PostgreSQL ``integer``), so that an id too
#: large is a 422 from validation, not a 500 from the driver.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a row id")]
SessionDep = Annotated[Session, Depends(get_session)]


class RefusalThrottle:
    """At most one audit row a minute for the same refusal (client, actor, reason): an anonymous
    flood must not become a flood of writes that holds SQLite's write lock for everyone. The
    refusals in between are counted and written with the next row (``repeated``). One per app."""

    every_s = 60.0

    def __init__(self) -> None:
        self._seen: dict[tuple[str | None, str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def due(self, key: tuple[str | None, str, str]) -> int | None:
        """The count of refusals held back since the last row, when one is due now; else None."""
        now = time.monotonic()
        with self._lock:
            last, repeated = self._seen.get(key, (float("-inf"), 0))
            if now - last < self.every_s:
                self._seen[key] = (last, repeated + 1)
                return None
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # bounded: the oldest keys go
                for stale in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                    del self._seen[stale]
            return repeated


def record_refusal(session: Session, throttle: RefusalThrottle, *, actor: str, method: str, path: str,
                   reason: str, user_id: int | None = None) -> None:
    """A refused request (401, 403) in the audit trail, in its own short transaction, with the
    client's address, never the token (at most one row a minute for the same refusal)."""
    repeated = throttle.due((audit.client_address.get(), actor, reason))
    if repeated is None:
        return
    begin_write(session)
    audit.record(session=session, actor=actor, user_id=user_id, action="auth.refused",
                 detail={"path": path[:200], "method": method, "reason": reason, "repeated": repeated})
    session.commit()


class RepeatedReads:
    """Which background reads repeat what the same user was shown moments ago.

    The page refreshes an open worklist every few seconds: a row for each refresh (8,640 a day
    per open page) would bury the reads people make. A refresh the page makes on its own
    (``X-Radservice-Background``, honoured for the page's cookie sessions only) that returns
    the same studies of the same patients to the same user as a read audited within
    ``window_s`` is not audited again; anything else is. A key counts as audited only once its
    row was handed over (a failed write leaves the next refresh to write one). Keys are kept as
    16-byte digests, at most ``limit`` of them (the oldest go first): a forgotten key means one
    more row, never one fewer.
    """

    def __init__(self, window_s: float = 300.0, limit: int = 10_000) -> None:
        self.window_s = window_s
        self.limit = limit
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def digest(key: tuple[Any, ...]) -> bytes:
        return hashlib.blake2b(repr(key).encode(), digest_size=16).digest()

    def due(self, key: tuple[Any, ...], *, now: float | None = None) -> bool:
        """True when ``key`` was not audited within the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._seen.get(self.digest(key))
        return last is None or now - last >= self.window_s

    def mark(self, key: tuple[Any, ...], *, now: float | None = None) -> None:
        """``key`` was audited now."""
        now = time.monotonic() if now is None else now
        digest = self.digest(key)
        with self._lock:
            self._seen.pop(digest, None)
            self._seen[digest] = now
            while len(self._seen) > self.limit:
                del self._seen[next(iter(self._seen))]


class ReadAuditor:
    """Writes the audit row of a read: into the app's queue (SQLite: one writer in batches, so a
    read never waits for the write lock) or, without a queue or when it is full, in its own
    short transaction on the request's session."""

    def __init__(self, queue: audit.ReadAudit | None, session: Session,
                 repeats: RepeatedReads | None = None, background: bool = False) -> None:
        self.queue = queue
        self.session = session
        self.repeats = repeats
        self.background = background

    def once(self, key: tuple[Any, ...], **row: Any) -> None:
        """Audit a read of ``key`` (who and what was shown): always for a person's request; for the
        page's own refresh only when it shows something not audited within the window."""
        if self.repeats is not None and self.background and not self.repeats.due(key):
            return
        self(**row)
        if self.repeats is not None:
            self.repeats.mark(key)

    def __call__(self, *, actor: str, action: str, user_id: int | None = None, entity_type: str | None = None,
                 entity_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
        if self.queue is not None and self.queue.add(actor=actor, action=action, user_id=user_id,
                                                     entity_type=entity_type, entity_id=entity_id, detail=detail):
            return
        begin_write(self.session)
        audit.record(session=self.session, actor=actor, action=action, user_id=user_id, entity_type=entity_type,
                     entity_id=entity_id, detail=detail)
        self.session.commit()


def get_read_auditor(request: Request, session: SessionDep, _user: CurrentUser) -> ReadAuditor:
    # (_user: authentication first, which sets request.state.web_session_id read below)
    # (the background header counts for the page's cookie sessions: a machine's token reads are all audited)
    background = (request.headers.get(BACKGROUND_HEADER) == "1"
                  and getattr(request.state, "web_session_id", None) is not None)
    return ReadAuditor(request.app.state.read_audit, session, getattr(request.app.state, "read_repeats", None),
                       background=background)


ReadAuditDep = Annotated[ReadAuditor, Depends(get_read_auditor)]


def _audit_refusal(session: Session, request: Request, *, actor: str, reason: str, user_id: int | None = None) -> None:
    record_refusal(session, request.app.state.refusals, actor=actor, method=request.method, path=request.url.path,
                   reason=reason, user_id=user_id)


#: The page's session cookie: HttpOnly, SameSite=Strict, Secure over HTTPS (``routes/signin.py``).
SESSION_COOKIE = "radservice_session"
#: Methods that change nothing: a cookie request with another method must come from our own page.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ENDED_COOKIE = f"{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"


#: Sent by the page with its own polling (the worklist's refresh, the deliveries): a request the
#: person did not make does not restart the session's idle clock.
BACKGROUND_HEADER = "x-radservice-background"
#: The page names the user it shows (URI-encoded): a cookie of another user is then refused.
USER_HEADER = "x-radservice-user"


def _touch(session: Session, session_id: int) -> None:
    """Restart a page session's idle clock: a write, at most once a minute per session (on
    SQLite it may wait for the write lock then). Best effort: when the database is busy or
    locked the request goes on, and a later request renews the clock."""
    try:
        begin_write(session)
        signin.touch(session=session, session_id=session_id)
        session.commit()
    except OperationalError as exc:
        session.rollback()
        log.info("a page session's idle clock was not renewed (%s); a later request renews it", cause(exc))


def same_origin(origin: str | None, host: str | None) -> bool:
    """Does the ``Origin`` header name this service (the ``Host`` the request was sent to)? A
    request from another site's page carries that site's origin (or none, or ``null``)."""
    if not origin or not host or origin == "null":
        return False
    parsed = urlsplit(origin)
    return parsed.scheme in ("http", "https") and parsed.netloc.lower() == host.lower()


def get_current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user of the bearer token, or of the page's session cookie; 401 without either
    (audited, with the client's address). A request with the cookie that changes state must
    come from the service's own page (``Origin``): 403 otherwise (cross-site request forgery)."""
    if credentials is not None and credentials.scheme.lower() == "bearer" and credentials.credentials:
        user = users.authenticate(session=session, token=credentials.credentials)
        if user is None:
            _audit_refusal(session, request, actor="anonymous", reason="bad token")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="invalid, expired or revoked token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return user
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        _audit_refusal(session, request, actor="anonymous", reason="no token")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="not signed in: sign in on the page, or send 'Authorization: Bearer TOKEN'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    settings: Settings = request.app.state.settings
    found = signin.session_user(session=session, cookie=cookie, policy=signin.Policy.of(settings.auth))
    if found is None:
        _audit_refusal(session, request, actor="anonymous", reason="session ended")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"your session has ended (signed out, {settings.auth.session_idle_minutes} minutes without "
                   "activity, or revoked): sign in again",
            headers={"WWW-Authenticate": "Bearer", "Set-Cookie": ENDED_COOKIE},
        )
    user, web = found
    claimed = request.headers.get(USER_HEADER)
    if claimed is not None and unquote(claimed) != user.username:
        # a tab signed in as someone else before this browser's cookie changed hands: its requests
        # must not act as the new person (authorship of a report)
        _audit_refusal(session, request, actor=user.username, user_id=user.id, reason="page of another user")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            detail="this browser has since been signed in as another user: sign in again",
                            headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS and not same_origin(request.headers.get("origin"),
                                                               request.headers.get("host")):
        _audit_refusal(session, request, actor=user.username, user_id=user.id, reason="cross-origin")
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail="refused: a request with the session cookie that changes data must come from "
                                   "this service's own page (Origin header)")
    if signin.needs_touch(web) and request.headers.get(BACKGROUND_HEADER) != "1":
        _touch(session, web.id)
    request.state.web_session_id = web.id
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: Role) -> Callable[[User, Session, Request], User]:
    """A dependency that lets only the given roles through (403 for the others)."""
    allowed = {r.value for r in roles}

    def check(user: CurrentUser, session: SessionDep, request: Request) -> User:
        if user.role not in allowed:
            _audit_refusal(session, request, actor=user.username, user_id=user.id, reason=f"role {user.role}")
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role '{user.role}' may not do this (needs: {', '.join(sorted(allowed))})",
            )
        return user

    return check


AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]


@functools.cache
def _templates_in(folder: PathType) -> Templates:
    return Templates.load(folder)


def templates(settings: Settings) -> Templates:
    """The report templates, read once per API process."""
    return _templates_in(PathType(settings.report.templates_dir))


def study_or_404(session: Session, accession: str, issuer: str | None) -> Study:
    """The study with this accession number: 404 when unknown, 409 when the issuer is needed."""
    try:
        study = worklist.find_study(session=session, accession_number=accession, accession_issuer=issuer)
    except worklist.AmbiguousAccession as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study with accession {accession!r}")
    return study
