"""Dependencies shared by the routes: a database session, the caller, role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from radservice.config import Settings
from radservice.users import service as users
from radservice.users.models import Role, User
from radservice.worklist import service as worklist
from radservice.worklist.models import Study

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


def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user the bearer token belongs to; 401 without a valid token."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing bearer token: send 'Authorization: Bearer TOKEN'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = users.authenticate(session=session, token=credentials.credentials)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid, expired or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: Role) -> Callable[[User], User]:
    """A dependency that lets only the given roles through (403 for the others)."""
    allowed = {r.value for r in roles}

    def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role '{user.role}' may not do this (needs: {', '.join(sorted(allowed))})",
            )
        return user

    return check


AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]


def study_or_404(session: Session, accession: str, issuer: str | None) -> Study:
    """The study with this accession number: 404 when unknown, 409 when the issuer is needed."""
    try:
        study = worklist.find_study(session=session, accession_number=accession, accession_issuer=issuer)
    except worklist.AmbiguousAccession as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study with accession {accession!r}")
    return study
