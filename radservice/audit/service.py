"""Writing the audit trail: the one function every feature calls."""

from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit.models import AuditEvent
from radservice.db.base import Base, utcnow
from radservice.db.errors import cause, transient

log = logging.getLogger("radservice.audit")

_INSERT = insert(Base.metadata.tables[AuditEvent.__tablename__])
#: The network address of the API client being served (set per request by the API; None in
#: workers, the HL7 listener and the CLI). Every audit row written while serving it names it.
client_address: ContextVar[str | None] = ContextVar("radservice_client_address", default=None)


def record(
    *,
    session: Session,
    actor: str,
    action: str,
    user_id: int | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one audit event to the session's transaction (committed with the work it records).

    ``detail`` holds identifiers (accession numbers, message control IDs), never patient
    names or report text.
    """
    # A plain INSERT: audit rows are written on hot paths (every order, every read) and never
    # read back in the same unit of work.
    session.connection().execute(_INSERT, _row(actor=actor, action=action, user_id=user_id, entity_type=entity_type,
                                               entity_id=entity_id, detail=detail))


def _row(*, actor: str, action: str, user_id: int | None, entity_type: str | None, entity_id: str | None,
         detail: dict[str, Any] | None) -> dict[str, Any]:
    """One audit row's values, stamped now, naming the client being served."""
    return {"at": utcnow(), "actor": actor, "action": action, "user_id": user_id, "entity_type": entity_type,
            "entity_id": entity_id, "detail": detail, "client": (client_address.get() or "")[:64] or None}


class ReadAudit:
    """The audit rows of reads, written to the database by one thread in batches.

    On SQLite every write takes the one write lock of the database: with a row written inside
    each read request, a poll of the worklist waited behind a worker's commit or an upload's.
    Here a read stamps its row (time, who, what, client) and goes on; every ``every_s`` one
    writer inserts what has gathered in one short transaction. The trade: a process killed
    outright loses the rows of the last moment (at most ``every_s`` plus a write the database
    held up); a normal stop writes them all (``close``). Rows are never dropped: past ``limit``
    rows waiting (the database has not taken a write for a long while), ``add`` says no and the
    caller writes its row in its own transaction, as without the queue.
    """

    def __init__(self, sessions: sessionmaker[Session], *, every_s: float = 0.25, limit: int = 50_000) -> None:
        self.sessions = sessions
        self.every_s = every_s
        self.limit = limit
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards _rows
        self._writing = threading.Lock()  # one writer at a time (the thread, close, a test's flush)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, *, actor: str, action: str, user_id: int | None = None, entity_type: str | None = None,
            entity_id: str | None = None, detail: dict[str, Any] | None = None) -> bool:
        """Queue one row (stamped now); False when too many wait (write it yourself)."""
        row = _row(actor=actor, action=action, user_id=user_id, entity_type=entity_type, entity_id=entity_id,
                   detail=detail)
        with self._lock:
            if self._closed or len(self._rows) >= self.limit:
                return False
            self._rows.append(row)
            if self._thread is None:  # started by the app's lifespan; else by the first row
                self._start()
            return True

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write every queued row in one transaction; return how many. When the database is busy
        or unreachable the rows go back to the front of the queue (in order) and the error is
        raised. Any other failure is one row's: the batch is written row by row, and a row the
        database refuses is logged (its action, never its values) and left out, so that it
        cannot hold back the rows after it."""
        with self._writing:
            with self._lock:
                batch, self._rows = self._rows, []
            if not batch:
                return 0
            try:
                self._insert(batch)
                return len(batch)
            except Exception as exc:
                if transient(exc):
                    with self._lock:
                        self._rows[:0] = batch
                    raise
            written = 0
            for number, row in enumerate(batch):
                try:
                    self._insert([row])
                    written += 1
                except Exception as exc:
                    if transient(exc):
                        with self._lock:
                            self._rows[:0] = batch[number:]
                        raise
                    log.error("an audit row (%s) was refused by the database (%s) and is left out",
                              row["action"], cause(exc))
            return written

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.sessions() as session, session.begin():
            session.connection().execute(_INSERT, rows)

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="read-audit", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._flush_logged()

    def _flush_logged(self) -> bool:
        try:
            self.flush()
            return True
        except SQLAlchemyError as exc:
            log.warning("audit rows of reads not written yet (%s): %d waiting, retried", cause(exc), self.pending())
            return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and write what waits (retried for up to ``timeout_s``); rows added
        afterwards are the caller's to write (``add`` says False)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout_s)
        for _ in range(max(1, int(timeout_s / 0.5))):
            if self._flush_logged():
                return
            time.sleep(0.5)
        log.error("%d audit rows of reads could not be written before the stop", self.pending())
