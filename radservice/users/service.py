"""Users and API tokens: create, issue, authenticate, revoke (keyword-only, on a session)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from radservice.db.base import utcnow
from radservice.users.models import ApiToken, Role, User
from radservice.users.names import PersonName, parse_display_name

ROLE_ALIASES = {"attending": Role.RADIOLOGIST}
TOKEN_PREFIX = "rs_"


class UserError(Exception):
    """A user operation that cannot be applied (unknown role, existing or unknown user)."""


def parse_role(name: str) -> Role:
    """The role for a name (`attending` is `radiologist`).

    Raises
    ------
    UserError
        The name is not a role.
    """
    key = name.strip().lower()
    if key in ROLE_ALIASES:
        return ROLE_ALIASES[key]
    try:
        return Role(key)
    except ValueError:
        allowed = ", ".join([r.value for r in Role] + list(ROLE_ALIASES))
        raise UserError(f"unknown role '{name}' (one of: {allowed})") from None


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


#: Column lengths of the name parts (users table).
_NAME_LIMITS = {"family_name": 64, "given_name": 64, "middle_name": 64, "name_prefix": 32, "name_suffix": 32,
                "degree": 64}


def person_name(user: User) -> PersonName:
    """The user's name in parts: as entered, else read from the display name."""
    if user.family_name:
        return PersonName(family=user.family_name, given=user.given_name, middle=user.middle_name,
                          prefix=user.name_prefix, suffix=user.name_suffix, degree=user.degree)
    return parse_display_name(user.display_name, user.username)


def set_name(*, session: Session, username: str, name: PersonName) -> User:
    """Give an existing user a name in parts (and the display name it reads as).

    Raises
    ------
    UserError
        No such user, no family name, or a part too long.
    """
    user = get_user(session=session, username=username)
    if user is None:
        raise UserError(f"no user '{username}'")
    for column, value in _name_columns(name).items():
        setattr(user, column, value)
    user.display_name = name.display()
    session.flush()
    return user


def _name_columns(name: PersonName) -> dict[str, str]:
    if not name.family.strip():
        raise UserError("a structured name needs a family name")
    parts = {"family_name": name.family, "given_name": name.given, "middle_name": name.middle,
             "name_prefix": name.prefix, "name_suffix": name.suffix, "degree": name.degree}
    for column, value in parts.items():
        if len(value.strip()) > _NAME_LIMITS[column]:
            raise UserError(f"{column.replace('_', ' ')} is longer than {_NAME_LIMITS[column]} characters")
    return {column: value.strip() for column, value in parts.items()}


def get_user(*, session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def create_user(*, session: Session, username: str, role: Role, display_name: str = "",
                name: PersonName | None = None) -> User:
    """Create an active user, with the name in parts when ``name`` is given.

    Raises
    ------
    UserError
        The username is empty or taken, or a name part is too long.
    """
    username = username.strip()
    if not username:
        raise UserError("a username cannot be empty")
    if get_user(session=session, username=username) is not None:
        raise UserError(f"user '{username}' already exists")
    parts: dict[str, str] = {}
    if name is not None:
        parts = _name_columns(name)
        display_name = display_name or name.display()
    user = User(username=username, role=role.value, display_name=display_name or username, active=True, **parts)
    session.add(user)
    session.flush()
    return user


def issue_token(*, session: Session, user: User, ttl_hours: int) -> str:
    """Create a token for the user and return it; only its hash is stored.

    ``ttl_hours`` of 0 makes a token that does not expire.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(hours=ttl_hours) if ttl_hours > 0 else None
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10], expires_at=expires))
    session.flush()
    return token


def authenticate(*, session: Session, token: str, now: datetime | None = None) -> User | None:
    """The active user a valid, unexpired, unrevoked token belongs to, else None."""
    now = now or utcnow()
    row = session.execute(
        select(ApiToken, User).join(User).where(ApiToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    api_token: ApiToken = row[0]
    user: User = row[1]
    if api_token.revoked_at is not None or not user.active:
        return None
    if api_token.expires_at is not None and api_token.expires_at <= now:
        return None
    return user


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def revoke_user(*, session: Session, username: str) -> int:
    """Deactivate a user and revoke every token; return how many tokens were revoked.

    Raises
    ------
    UserError
        No such user.
    """
    user = get_user(session=session, username=username)
    if user is None:
        raise UserError(f"no user '{username}'")
    user.active = False
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
