"""People signing in on the page: passwords (Argon2id), cookie sessions, and the lock after
repeated failures (keyword-only functions on a session; the caller commits).

A password is never stored, logged or compared in clear: only its Argon2id hash is kept. A
session's cookie holds 256 random bits; only their SHA-256 is stored (as for API tokens).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit import service as audit
from radservice.config import AuthSettings
from radservice.db.base import utcnow
from radservice.users.models import SignInFailure, User, WebSession
from radservice.users.service import UserError, get_user, hash_token

#: OWASP's Argon2id parameters (19 MiB, 2 passes, 1 lane): about 40 ms a check on this
#: project's 2-core machine, so that signing in stays quick and guessing stays expensive.
#: A hash made with other parameters still verifies, and is renewed at the next sign-in.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
#: Checked against when the username is unknown, so that the answer takes as long either way.
_DUMMY = _HASHER.hash("radservice: no such user")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
#: How often using a session writes its ``last_seen_at`` (not at every request: that is a write).
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Policy:
    idle: timedelta
    max_age: timedelta
    lock_after: int
    lock_window: timedelta
    lock_for: timedelta
    #: Failures from one address that lock it (``lock_after`` when not set): behind a NAT or on
    #: a shared reading-room workstation many people share one address.
    lock_after_address: int | None = None

    @property
    def address_threshold(self) -> int:
        return self.lock_after_address or self.lock_after

    @classmethod
    def of(cls, auth: AuthSettings) -> Policy:
        """The policy the ``[auth]`` settings give."""
        return cls(idle=timedelta(minutes=auth.session_idle_minutes), max_age=timedelta(hours=auth.session_max_hours),
                   lock_after=auth.lock_after_failures, lock_window=timedelta(minutes=auth.lock_window_minutes),
                   lock_for=timedelta(minutes=auth.lock_minutes),
                   lock_after_address=auth.address_lock_after_failures)


def check_password_rules(password: str) -> None:
    """Raises UserError when the password is too short or too long (no composition rules:
    length is what resists guessing, NIST SP 800-63B)."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"a password may have at most {MAX_PASSWORD} characters")


def set_password(*, session: Session, username: str, password: str) -> User:
    """Give the user a new password; every page session of the user ends (signed in elsewhere
    with the old one: signed out).

    Raises
    ------
    UserError
        No such user, or the password breaks the rules.
    """
    check_password_rules(password)
    user = get_user(session=session, username=username)
    if user is None:
        raise UserError(f"no user '{username}'")
    user.password_hash = _HASHER.hash(password)
    end_user_sessions(session=session, user_id=user.id)
    session.flush()
    return user


def end_user_sessions(*, session: Session, user_id: int, now: datetime | None = None) -> int:
    """End every open page session of the user; return how many."""
    result = session.execute(update(WebSession).where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
                             .values(ended_at=now or utcnow()).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: ``user`` and ``cookie`` when it succeeded; ``locked_until`` when
    sign-in is locked for this username or address (the password was not checked)."""

    user: User | None = None
    cookie: str | None = None
    locked_until: datetime | None = None
    lock_started: bool = False


def locked_until(*, session: Session, username: str, client: str, policy: Policy,
                 now: datetime | None = None) -> datetime | None:
    """When the lock on this username or this address ends, if one is on now.

    A lock starts at the failure that makes ``lock_after`` within ``lock_window`` and lasts
    ``lock_for``. Failures are not recorded while a lock is on, so a lock ends on time.
    """
    now = now or utcnow()
    horizon = now - policy.lock_for - policy.lock_window
    ends: list[datetime] = []
    for column, key, after in ((SignInFailure.username, username, policy.lock_after),
                               (SignInFailure.client, client, policy.address_threshold)):
        if not key:
            continue
        times = list(session.scalars(select(SignInFailure.at).where(column == key, SignInFailure.at >= horizon)
                                     .order_by(SignInFailure.at)))
        for i in range(after - 1, len(times)):  # each failure that filled a window
            if times[i] - times[i - after + 1] <= policy.lock_window:
                until = times[i] + policy.lock_for
                if until > now:
                    ends.append(until)
    return max(ends) if ends else None


def sign_in(*, write: sessionmaker[Session], username: str, password: str, client: str,
            policy: Policy, replaces: str | None = None) -> SignIn:
    """Check a username and password; on success open a page session. Audited.

    First one short write: the lock is checked and this attempt is counted as a failure,
    before the password is checked (so that guesses sent in parallel cannot all pass the check:
    the attempts are serialised there, by SQLite's write lock or PostgreSQL advisory locks per
    username and address). Then the password is checked with no transaction open. Then a second
    short write: a success removes the user's failures and opens the session; a failure stays
    counted, is audited, and may start the lock. An unknown username takes as long as a known
    one and counts for the address only (what was typed is not kept: it may be a password).
    ``replaces``: the cookie the browser still had; a success ends that session (whoever's it
    was), so one browser holds one session.
    """
    username = username.strip()[:64]
    client = client[:64]
    with write() as session, session.begin():
        _serialise(session, username, client)
        now = utcnow()
        locked = locked_until(session=session, username=username, client=client, policy=policy, now=now)
        if locked is not None:
            return SignIn(locked_until=locked)
        user = get_user(session=session, username=username) if username else None
        stored = user.password_hash if user is not None and user.active else None
        user_id = user.id if user is not None else None
        session.add(SignInFailure(at=now, username=username if user is not None else "", client=client))
    good = _verify(stored, password)
    with write() as session, session.begin():
        now = utcnow()
        if good:
            user = session.get(User, user_id)
            if user is not None and user.active and user.password_hash == stored:
                session.execute(delete(SignInFailure).where(SignInFailure.username == user.username)
                                .execution_options(synchronize_session=False))
                if replaces:
                    _end_replaced(session, replaces, now)
                return _open(session, user, password, client, now)
        known = user_id is not None
        audit.record(session=session, actor=username if known else "anonymous", user_id=user_id,
                     action="auth.sign_in_failed", detail={"reason": "wrong password" if known else "unknown user"})
        locked = locked_until(session=session, username=username, client=client, policy=policy, now=now)
        if locked is not None:
            audit.record(session=session, actor=username if known else "anonymous", user_id=user_id,
                         action="auth.locked", detail={"until": locked.isoformat(), "failures": policy.lock_after,
                                                       "address_failures": policy.address_threshold})
        return SignIn(locked_until=locked, lock_started=locked is not None)


def _end_replaced(session: Session, cookie: str, now: datetime) -> None:
    """End the session the browser held before this sign-in (audited with its user)."""
    row = session.execute(select(User.id, User.username).join(WebSession, WebSession.user_id == User.id)
                          .where(WebSession.token_hash == hash_token(cookie), WebSession.ended_at.is_(None))).first()
    if row is not None and sign_out(session=session, cookie=cookie, now=now):
        audit.record(session=session, actor=row[1], user_id=row[0], action="auth.sign_out",
                     detail={"reason": "another sign-in in the same browser"})


def _serialise(session: Session, username: str, client: str) -> None:
    """Sign-in attempts for one username or from one address, one after the other (PostgreSQL:
    transaction-scoped advisory locks, always the username's first; SQLite: the write lock the
    transaction already holds)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(text("SELECT pg_advisory_xact_lock(7301, hashtext(:key))"), {"key": username})
    session.execute(text("SELECT pg_advisory_xact_lock(7302, hashtext(:key))"), {"key": client})


def unlock(*, session: Session, username: str | None = None, client: str | None = None) -> int:
    """Forget the failed sign-ins of a username and/or an address (the lock ends); how many."""
    removed = 0
    for column, key in ((SignInFailure.username, username), (SignInFailure.client, client)):
        if key:
            result = session.execute(delete(SignInFailure).where(column == key)
                                     .execution_options(synchronize_session=False))
            removed += int(getattr(result, "rowcount", 0) or 0)
    return removed


def _open(session: Session, user: User, password: str, client: str, now: datetime) -> SignIn:
    if user.password_hash and _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    cookie = secrets.token_urlsafe(32)
    session.add(WebSession(user_id=user.id, token_hash=hash_token(cookie), created_at=now, last_seen_at=now,
                           client=client or None))
    audit.record(session=session, actor=user.username, user_id=user.id, action="auth.sign_in")
    session.flush()
    return SignIn(user=user, cookie=cookie)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def session_user(*, session: Session, cookie: str, policy: Policy,
                 now: datetime | None = None) -> tuple[User, WebSession] | None:
    """The active user of an open, unexpired page session, else None."""
    now = now or utcnow()
    row = session.execute(select(WebSession, User).join(User).where(WebSession.token_hash == hash_token(cookie))
                          ).first()
    if row is None:
        return None
    web: WebSession = row[0]
    user: User = row[1]
    if web.ended_at is not None or not user.active:
        return None
    if now - web.last_seen_at > policy.idle or now - web.created_at > policy.max_age:
        return None
    return user, web


def needs_touch(web: WebSession, now: datetime | None = None) -> bool:
    return (now or utcnow()) - web.last_seen_at >= TOUCH_EVERY


def touch(*, session: Session, session_id: int, now: datetime | None = None) -> None:
    """Renew a page session's ``last_seen_at`` (only forward; an ended session stays ended)."""
    now = now or utcnow()
    session.execute(update(WebSession).where(WebSession.id == session_id, WebSession.ended_at.is_(None),
                                             WebSession.last_seen_at < now)
                    .values(last_seen_at=now).execution_options(synchronize_session=False))


def sign_out(*, session: Session, cookie: str, now: datetime | None = None) -> bool:
    """End the page session of this cookie; True when one was open."""
    result = session.execute(update(WebSession).where(WebSession.token_hash == hash_token(cookie),
                                                      WebSession.ended_at.is_(None))
                             .values(ended_at=now or utcnow()).execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


def prune(*, session: Session, policy: Policy, now: datetime | None = None) -> int:
    """Delete failures older than any lock could use and sessions over their age; return how many."""
    now = now or utcnow()
    gone = session.execute(delete(SignInFailure).where(SignInFailure.at < now - policy.lock_for - policy.lock_window)
                           .execution_options(synchronize_session=False))
    ended = session.execute(delete(WebSession).where(WebSession.created_at < now - policy.max_age - timedelta(days=1))
                            .execution_options(synchronize_session=False))
    return int(getattr(gone, "rowcount", 0) or 0) + int(getattr(ended, "rowcount", 0) or 0)
