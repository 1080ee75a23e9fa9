"""Engines and sessions for SQLite (embedded default) and PostgreSQL (scale-out)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, say when a transaction begins, so that
    # transactions and SAVEPOINTs mean what they say (SQLAlchemy's pysqlite recipe).
    dbapi_connection.isolation_level = None
    # SQLite's lower() folds ASCII only; worklist search must find "müller" in "MÜLLER" as PostgreSQL does.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
    # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # FULL: a commit is on disk when it returns (WAL fsynced at every commit). Everything behind
    # an HL7 ACK or a 202 must survive a power loss; NORMAL could lose the last commits.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


#: Execution option that says how a SQLite transaction begins: ``IMMEDIATE`` (the default: the
#: write lock up front) or ``DEFERRED`` (a reader: no lock; see ``reader``).
SQLITE_BEGIN = "radservice_sqlite_begin"


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front (waiting up to busy_timeout): a deferred
    # transaction that reads and then writes fails at once with "database is locked" when
    # another connection wrote in between. Workers, intake and the CLI write in nearly every
    # transaction; the API's request sessions read with DEFERRED and write through begin_write.
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create the engine for a database URL; a SQLite file's folder is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: a failed statement's error (logged with its traceback) must not carry
        # the bound values, which hold names, IDs and report text.
        engine = create_engine(url, echo=echo, hide_parameters=True,
                               connect_args={"check_same_thread": False, "timeout": 5})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # No pre-ping: it costs a round trip per transaction on the intake path. A connection
    # dropped by a server restart fails once, SQLAlchemy then invalidates the pool, and the
    # callers retry (HL7 intake) or answer 503 (API readiness).
    return create_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_recycle=1800, hide_parameters=True,
                         connect_args={"connect_timeout": 5})


def make_sessionmaker(engine: Engine, *, reader: bool = False) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit.

    ``reader``: sessions whose transactions only read unless ``begin_write`` says otherwise. On
    SQLite they begin DEFERRED and so never take (or wait for) the write lock: a read is never
    held up by a writer, and a slow request (an LLM call, an upload being decoded) holds no lock
    for others. On PostgreSQL nothing changes (readers never block there).
    """
    bind = engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"}) if reader else engine
    return sessionmaker(bind, expire_on_commit=False)


def readers_of(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Reader sessions (see ``make_sessionmaker``) on the database of these sessions."""
    bind = sessions.kw.get("bind")
    return make_sessionmaker(bind, reader=True) if isinstance(bind, Engine) else sessions


def begin_write(session: Session) -> None:
    """Start the session's next transaction as a writer, ending a read transaction in progress.

    Call it before the first statement of a transaction that writes (and before reading what
    that write depends on, which is then read again under the lock). On SQLite a reader's
    transaction cannot safely become a writer (it fails at once when another connection wrote
    since it began); this begins a new one with ``BEGIN IMMEDIATE``, waiting for the write lock
    up to the busy timeout. Objects loaded before stay usable (``expire_on_commit=False``).
    """
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("begin_write: changes made before the write transaction began")
        session.commit()
    session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
