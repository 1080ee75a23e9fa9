"""The queue of read audit rows (SQLite): nothing lost on a normal stop, a locked database
keeps the rows in order, a row the database refuses holds back no others, a full queue makes
the caller write its own row."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit.models import AuditEvent
from radservice.audit.service import ReadAudit
from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker
from tests.support import add_study, make_user


def _db(tmp_path: Path) -> tuple[Path, sessionmaker[Session]]:
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    # a short busy timeout: a locked database fails the flush at once instead of after 5 s
    quick = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})

    @event.listens_for(quick, "connect")
    def _autocommit(dbapi_connection: sqlite3.Connection, _: object) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(quick, "begin")
    def _immediate(conn: object) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # type: ignore[attr-defined]

    return path, make_sessionmaker(quick)


def _actions(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_a_stop_writes_every_row_still_waiting(tmp_path: Path) -> None:
    _, sessions = _db(tmp_path)
    queue = ReadAudit(sessions, every_s=3600)  # the thread would not write for an hour
    for n in range(5):
        assert queue.add(actor="dr.q", action=f"study.read.{n}", entity_id=f"A-{n}")
    assert _actions(sessions) == []
    queue.close()
    assert _actions(sessions) == [f"study.read.{n}" for n in range(5)]
    assert not queue.add(actor="dr.q", action="late")  # after the stop: the caller writes it


def test_a_locked_database_keeps_the_rows_in_order_for_the_next_write(tmp_path: Path) -> None:
    path, sessions = _db(tmp_path)
    queue = ReadAudit(sessions, every_s=3600)
    queue.add(actor="dr.q", action="first")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Exception, match="locked"):
            queue.flush()
        queue.add(actor="dr.q", action="second")
        assert queue.pending() == 2
    finally:
        holder.rollback()
        holder.close()
    assert queue.flush() == 2
    assert _actions(sessions) == ["first", "second"]
    queue.close()


def test_a_row_the_database_refuses_holds_back_no_other(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, sessions = _db(tmp_path)
    queue = ReadAudit(sessions, every_s=3600)
    queue.add(actor="dr.q", action="before")
    queue.add(actor="dr.q", action="poison", detail={"not json": object()})
    queue.add(actor="dr.q", action="after")
    with caplog.at_level(logging.ERROR, logger="radservice.audit"):
        assert queue.flush() == 2
    assert _actions(sessions) == ["before", "after"]
    assert "poison" in caplog.text and "object at" not in caplog.text
    assert queue.pending() == 0
    queue.close()


def test_a_full_queue_makes_the_read_write_its_own_row(tmp_path: Path) -> None:
    """The API's side: with the queue full (the database took no write for long), the read
    writes its row in its own transaction; nothing is dropped."""
    from radservice.api.app import create_app
    from radservice.config import Settings

    engine = make_engine(f"sqlite:///{tmp_path}/full.db")
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    headers = {"Authorization": f"Bearer {make_user(factory, 'dr.full', 'radiologist')}"}
    add_study(factory, "FULL-1")
    settings = Settings(database={"url": str(engine.url)}, storage={"data_dir": tmp_path / "data"})
    app = create_app(settings, engine)
    app.state.read_audit.limit = 0
    with TestClient(app) as client:
        assert client.get("/api/v1/studies/FULL-1", headers=headers).status_code == 200
        assert app.state.read_audit.pending() == 0
        assert _actions(factory) == ["study.read"]  # written by the request itself
    engine.dispose()
