"""Database failures sorted for callers: ones that pass (retry, 503) and the rest, and a short
description of a failure that never carries the statement's values (names, IDs, report text)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

#: SQLSTATE classes and codes of failures that pass (PostgreSQL): connection (08), transaction
#: rollback such as serialization failure or deadlock (40), insufficient resources (53),
#: operator intervention such as a statement timeout or an admin shutdown (57), system I/O
#: (58); lock not available (55P03); a read-only transaction or standby after a failover
#: (25006, 25P03, 25P04); and a database the running code does not match (undefined table or
#: column, no privilege: every message would fail alike until the deployment is fixed). Other
#: class 42 errors are a bug on one path: AE 207, so that they cannot jam the feed.
_TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}
_TRANSIENT_SQLSTATES = {"55P03", "25006", "25P03", "25P04", "42P01", "42703", "42501"}


def transient(exc: BaseException) -> bool:
    """Is this a failure that passes (database unreachable, busy, locked), so that closing without
    an ACK (the RIS resends) is right? Everything else is this message's problem: AE 207."""
    if isinstance(exc, (PoolTimeout, DisconnectionError)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
    # SQLite (no SQLSTATE): locked, busy, I/O, no such table: OperationalError; data and
    # constraint errors are other classes.
    return isinstance(exc, OperationalError)


def cause(exc: BaseException) -> str:
    """The failure's type (and SQLSTATE) for logs, job errors and ERR text: never its message,
    which may quote values."""
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    return f"{type(orig).__name__}{f' {sqlstate}' if sqlstate else ''}"
