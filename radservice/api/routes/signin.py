"""Signing in and out on the page: a username and password for an HttpOnly session cookie."""

from __future__ import annotations

import math
from datetime import datetime

import anyio
from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from radservice.api.deps import ENDED_COOKIE, SESSION_COOKIE, CurrentUser, SessionDep, same_origin
from radservice.audit import service as audit
from radservice.db.base import utcnow
from radservice.db.session import begin_write
from radservice.users import signin

router = APIRouter(prefix="/api/v1", tags=["session"])

#: A failed sign-in answers after this long (on top of the password check): guessing is slowed
#: without holding a thread (the wait is asynchronous).
FAILURE_DELAY_S = 0.5


class SignInBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=signin.MAX_PASSWORD)


class SignedIn(BaseModel):
    username: str
    display_name: str
    role: str
    idle_minutes: int = Field(description="the session ends after this many minutes without a request")


def _locked(until: datetime, *, started: bool) -> HTTPException:
    minutes = max(1, math.ceil((until - utcnow()).total_seconds() / 60))
    first = "wrong username or password. " if started else ""
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                         detail=f"{first}Too many failed sign-ins for this user or from this computer: signing in is "
                                f"locked for {minutes} minute{'s' if minutes != 1 else ''}. Ask IT if you need "
                                "help sooner.",
                         headers={"Retry-After": str(minutes * 60)})


@router.post("/session", response_model=SignedIn, responses={
    401: {"description": "wrong username or password"},
    403: {"description": "not from this service's own page (Origin)"},
    429: {"description": "signing in is locked after repeated failures (Retry-After)"}})
async def sign_in(body: SignInBody, request: Request, response: Response) -> SignedIn:
    """Sign in with a username and password: sets the page's session cookie (HttpOnly,
    SameSite=Strict, Secure over HTTPS). Failures are slowed, counted per user and per address,
    and lock signing in for a while after repeated ones; all are audited."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")) \
            and request.headers.get("origin") is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="refused: sign in on this service's own page")
    app = request.app
    settings = app.state.settings
    policy = signin.Policy.of(settings.auth)
    client = audit.client_address.get() or ""
    outcome = await anyio.to_thread.run_sync(lambda: signin.sign_in(
        write=app.state.sessionmaker, username=body.username,
        password=body.password, client=client, policy=policy, replaces=request.cookies.get(SESSION_COOKIE)))
    if outcome.user is None or outcome.cookie is None:
        if outcome.locked_until is not None and not outcome.lock_started:
            raise _locked(outcome.locked_until, started=False)  # nothing was checked: no delay needed
        await anyio.sleep(FAILURE_DELAY_S)
        if outcome.locked_until is not None:
            raise _locked(outcome.locked_until, started=True)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="wrong username or password")
    response.set_cookie(SESSION_COOKIE, outcome.cookie, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    user = outcome.user
    return SignedIn(username=user.username, display_name=user.display_name, role=user.role,
                    idle_minutes=settings.auth.session_idle_minutes)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def sign_out(user: CurrentUser, session: SessionDep, request: Request) -> Response:
    """Sign out: the page's session ends here and now (a bearer token is not touched)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and getattr(request.state, "web_session_id", None) is not None:
        begin_write(session)
        signin.sign_out(session=session, cookie=cookie)
        audit.record(session=session, actor=user.username, user_id=user.id, action="auth.sign_out")
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"Set-Cookie": ENDED_COOKIE})
