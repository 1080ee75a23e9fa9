"""The queue of read audit rows (SQLite): nothing lost on a normal stop, a locked database
keeps the rows in order, a row the database refuses holds back no others, a full queue makes
the caller write its own row."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit.models import AuditEvent
from radservice.audit.service import ReadAudit
from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker
from tests.support import add_study, make_user

pytestmark = pytest.mark.integration


def _db(tmp_path: Path, busy_timeout_s: float = 0.1) -> tuple[Path, sessionmaker[Session]]:
    path = tmp_path / "audit.db"
    if not path.exists():
        engine = make_engine(f"sqlite:///{path}")
        migrate.upgrade(engine)
        engine.dispose()
    # a short busy timeout: a locked database fails the flush at once instead of after 5 s
    quick = create_engine(f"sqlite:///{path}", connect_args={"timeout": busy_timeout_s})

    @event.listens_for(quick, "connect")
    def _autocommit(dbapi_connection: sqlite3.Connection, _: object) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(quick, "begin")
    def _immediate(conn: object) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # type: ignore[attr-defined]

    return path, make_sessionmaker(quick)


def _started(sessions: sessionmaker[Session], **options: Any) -> ReadAudit:
    queue = ReadAudit(sessions, **{"every_s": 3600, **options})  # the thread would not write for an hour
    queue.start()
    return queue


def _actions(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_a_stop_writes_every_row_still_waiting(tmp_path: Path) -> None:
    _, sessions = _db(tmp_path)
    queue = _started(sessions)
    for n in range(5):
        assert queue.add(actor="dr.q", action=f"study.read.{n}", entity_id=f"A-{n}")
    assert _actions(sessions) == []
    queue.close()
    assert _actions(sessions) == [f"study.read.{n}" for n in range(5)]
    assert not queue.add(actor="dr.q", action="late")  # after the stop: the caller writes it


def test_a_locked_database_keeps_the_rows_in_order_for_the_next_write(tmp_path: Path) -> None:
    """A row added while a flush waits for the lock comes after the rows that flush took out
    (put back in front, not behind)."""
    path, _ = _db(tmp_path)
    _, sessions = _db(tmp_path, busy_timeout_s=1.0)
    queue = _started(sessions)
    queue.add(actor="dr.q", action="first")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    failed: list[BaseException] = []

    def flush() -> None:
        try:
            queue.flush()
        except Exception as exc:
            failed.append(exc)

    try:
        flushing = threading.Thread(target=flush)
        flushing.start()
        time.sleep(0.3)  # the flush has taken "first" out and waits for the lock
        assert queue.pending() == 0
        queue.add(actor="dr.q", action="second")
        flushing.join(5)
        assert failed and "locked" in str(failed[0])
        assert queue.pending() == 2
    finally:
        holder.rollback()
        holder.close()
    assert queue.flush() == 2
    assert _actions(sessions) == ["first", "second"]  # by id: the order they were written in
    queue.close()


def test_a_row_the_database_refuses_holds_back_no_other(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, sessions = _db(tmp_path)
    queue = _started(sessions, chunk=2)
    queue.add(actor="dr.q", action="before")
    queue.add(actor="dr.secret", action="poison", entity_type="study", entity_id="ACC-SECRET-1",
              detail={"name": "DOE^SECRET", "not json": object()})
    queue.add(actor="dr.q", action="after")
    with caplog.at_level(logging.DEBUG, logger="radservice.audit"):
        assert queue.flush() == 3
    assert _actions(sessions) == ["before", "poison", "after"]
    with sessions() as session:
        poison = session.scalars(select(AuditEvent).where(AuditEvent.action == "poison")).one()
        assert poison.detail == {"audit_error": "TypeError"} and poison.entity_id == "ACC-SECRET-1"
    assert "poison" in caplog.text
    for secret in ("ACC-SECRET-1", "DOE^SECRET", "dr.secret", "object at"):
        assert secret not in caplog.text
    assert queue.pending() == 0
    queue.close()


def test_a_database_that_refuses_every_row_loses_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a row's fault (a damaged file, a bug in every insert): everything stays queued."""
    _, sessions = _db(tmp_path)
    queue = _started(sessions)
    for n in range(3):
        queue.add(actor="dr.q", action=f"read.{n}")

    def refuse(rows: list[dict[str, Any]]) -> None:
        raise DatabaseError("INSERT", {}, Exception("file is not a database"))

    monkeypatch.setattr(queue, "_insert", refuse)
    with pytest.raises(DatabaseError):
        queue.flush()
    assert queue.pending() == 3
    monkeypatch.undo()
    assert queue.flush() == 3
    assert _actions(sessions) == ["read.0", "read.1", "read.2"]
    queue.close()


def test_the_queue_fails_closed(tmp_path: Path) -> None:
    """No running writer, or rows waiting too long: the caller writes its own row (and waits for
    the lock, or answers 503, as without the queue)."""
    _, sessions = _db(tmp_path)
    idle = ReadAudit(sessions)
    assert not idle.add(actor="dr.q", action="no writer")
    queue = _started(sessions, max_age_s=0.2)
    assert queue.add(actor="dr.q", action="first")
    time.sleep(0.3)
    assert not queue.add(actor="dr.q", action="too late")  # the first has waited too long
    queue.flush()
    assert queue.add(actor="dr.q", action="again")
    queue.close()
    assert _actions(sessions) == ["first", "again"]


def _api(tmp_path: Path, name: str) -> tuple[Any, sessionmaker[Session], dict[str, str]]:
    """The API on its own SQLite file with a radiologist and the study NAME-1; app, sessions, headers."""
    from radservice.api.app import create_app
    from radservice.config import Settings

    engine = make_engine(f"sqlite:///{tmp_path}/{name}.db")
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    headers = {"Authorization": f"Bearer {make_user(factory, f'dr.{name}', 'radiologist')}"}
    add_study(factory, f"{name.upper()}-1")
    settings = Settings(database={"url": str(engine.url)}, storage={"data_dir": tmp_path / "data"})
    return create_app(settings, engine), factory, headers


def test_a_full_queue_makes_the_read_write_its_own_row(tmp_path: Path) -> None:
    """The API's side: with the queue full (the database took no write for long), the read
    writes its row in its own transaction; nothing is dropped."""
    app, factory, headers = _api(tmp_path, "full")
    app.state.read_audit.limit = 0
    with TestClient(app) as client:
        assert client.get("/api/v1/studies/FULL-1", headers=headers).status_code == 200
        assert app.state.read_audit.pending() == 0
        assert _actions(factory) == ["study.read"]  # written by the request itself
    factory.kw["bind"].dispose()


def test_the_apps_stop_writes_the_rows_of_reads(tmp_path: Path) -> None:
    app, factory, headers = _api(tmp_path, "stop")
    app.state.read_audit.every_s = 3600  # only the stop writes
    with TestClient(app) as client:
        for _ in range(3):
            assert client.get("/api/v1/studies/STOP-1", headers=headers).status_code == 200
        assert app.state.read_audit.pending() == 3
    assert _actions(factory) == ["study.read"] * 3
    factory.kw["bind"].dispose()
