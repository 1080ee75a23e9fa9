"""Writing the audit trail: the one function every feature calls."""

from __future__ import annotations

import copy
import logging
import threading
import time
from contextvars import ContextVar
from typing import Any

from sqlalchemy import insert
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
    writer inserts what has gathered, in transactions of at most ``chunk`` rows.

    It fails closed: ``add`` says no (and the request writes its own row, waiting for the lock
    or answering 503 as without the queue) when the writer is not running, when ``limit`` rows
    wait, or when the oldest waiting row is older than ``max_age_s`` (the database has refused
    writes for that long). So rows of reads wait in memory for seconds at most, and a process
    killed outright loses at most those. A normal stop writes them (``close``).

    Rows are not dropped on the way: a busy or unreachable database puts them back, in order,
    for the next try. A batch the database refuses otherwise is split until the refused row is
    found; that row is written again without its ``detail`` (marked ``audit_error``); only if
    that fails too is the failure the database's, not the row's: everything goes back.
    """

    def __init__(self, sessions: sessionmaker[Session], *, every_s: float = 0.25, limit: int = 10_000,
                 max_age_s: float = 10.0, chunk: int = 500) -> None:
        self.sessions = sessions
        self.every_s = every_s
        self.limit = limit
        self.max_age_s = max_age_s
        self.chunk = chunk
        self._rows: list[dict[str, Any]] = []
        self._oldest: float | None = None  # monotonic time the oldest waiting row was added
        self._lock = threading.Lock()  # guards _rows, _oldest, _thread, _closed
        self._writing = threading.Lock()  # one writer at a time (the thread, close, a test's flush)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, *, actor: str, action: str, user_id: int | None = None, entity_type: str | None = None,
            entity_id: str | None = None, detail: dict[str, Any] | None = None) -> bool:
        """Queue one row (stamped now); False when the caller must write it itself (no writer
        running, too many rows waiting, or the oldest waiting too long)."""
        row = _row(actor=actor, action=action, user_id=user_id, entity_type=entity_type, entity_id=entity_id,
                   detail=copy.deepcopy(detail))
        now = time.monotonic()
        with self._lock:
            if self._closed or self._thread is None or not self._thread.is_alive():
                return False
            if len(self._rows) >= self.limit or (self._oldest is not None and now - self._oldest > self.max_age_s):
                return False
            if not self._rows:
                self._oldest = now
            self._rows.append(row)
            return True

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write every queued row; return how many. When the database is busy, unreachable or
        refuses writes altogether, the rows not written go back to the front of the queue (in
        order) and the error is raised."""
        with self._writing:
            with self._lock:
                batch, self._rows = self._rows, []
                oldest, self._oldest = self._oldest, None
            written = [0]  # rows go in in order: what is written is always a prefix of the batch
            try:
                for start in range(0, len(batch), self.chunk):
                    self._write(batch[start:start + self.chunk], written)
            except Exception:
                with self._lock:
                    self._rows[:0] = batch[written[0]:]
                    if self._rows:
                        self._oldest = min(t for t in (oldest, self._oldest, time.monotonic()) if t is not None)
                raise
            return written[0]

    def _write(self, rows: list[dict[str, Any]], written: list[int]) -> None:
        """Insert the rows in one transaction (``written[0]`` counts them); a refused batch is
        halved until the refused row is found, which is then written without its detail. Raises
        when the failure is not a row's."""
        try:
            self._insert(rows)
        except Exception as exc:
            if transient(exc):
                raise
            if len(rows) > 1:
                half = len(rows) // 2
                self._write(rows[:half], written)
                self._write(rows[half:], written)
                return
            row = rows[0]
            log.error("an audit row (%s, %s) was refused by the database (%s); written without its detail",
                      row["action"], row["entity_type"], cause(exc))
            self._insert([{**row, "detail": {"audit_error": cause(exc)}}])  # raises: the database's failure
        written[0] += len(rows)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.sessions() as session, session.begin():
            session.connection().execute(_INSERT, rows)

    def start(self) -> None:
        """Start the writer (the app's lifespan does); until then ``add`` says no."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._stop.clear()
            thread = threading.Thread(target=self._run, name="read-audit", daemon=True)
            thread.start()
            self._thread = thread

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._flush_logged()

    def _flush_logged(self) -> bool:
        try:
            self.flush()
            return True
        except Exception as exc:  # never kills the writer; the rows wait for the next try
            log.warning("audit rows of reads not written yet (%s): %d waiting, retried", cause(exc), self.pending())
            return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer and write what waits, trying until ``timeout_s`` has passed (one try
        may take the database's busy timeout); afterwards ``add`` says no."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout_s)
        while True:
            if self._flush_logged() and self.pending() == 0:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        log.error("%d audit rows of reads could not be written before the stop", self.pending())
