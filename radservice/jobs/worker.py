"""The worker loop: claim a job, run its handler while a heartbeat keeps the lease, record the outcome.

A handler takes the claimed job's ids, opens its own sessions and must be idempotent: a job
runs again when its worker died, and a retry replaces what the first attempt wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from radservice.db.errors import cause
from radservice.db.session import readers_of, session_scope
from radservice.jobs import service as jobs
from radservice.jobs.service import ClaimedJob

log = logging.getLogger("radservice.worker")


class PermanentJobError(Exception):
    """The job cannot succeed by running again (bad input); it fails at once with this reason."""


class LeaseLost(Exception):
    """This worker no longer holds the job (its lease expired and another may run it): nothing
    of this attempt's result may be written."""


@dataclass
class JobContext:
    """What a handler gets: the job, the database, and a way to report progress."""

    job: ClaimedJob
    sessions: sessionmaker[Session]
    report_progress: Callable[[float], None] = field(default=lambda fraction: None)
    #: The worker holding the job's lease (None when a handler is called outside a worker).
    owner: str | None = None
    #: Sessions that only read (SQLite: no write lock), for polls; ``sessions`` when not given.
    readers: sessionmaker[Session] | None = None

    def hold(self, session: Session) -> None:
        """Call first in every transaction that writes the job's result: the job's row is locked
        until that transaction ends, and LeaseLost is raised unless this worker still holds it, so
        that a job reaped from a stalled worker and run again elsewhere is never written twice."""
        if self.owner is not None and not jobs.holds(session=session, job_id=self.job.id, owner=self.owner):
            raise LeaseLost(f"job {self.job.id} is no longer held by {self.owner}")


Handler = Callable[[JobContext], dict[str, Any]]
#: Marks what a job failed for good worked on (a handler's ``on_failed``): session, payload, reason.
OnFailed = Callable[[Session, dict[str, Any], str], None]


def job_error(exc: BaseException) -> str:
    """What a failed attempt stores as the job's error (shown by the API and the CLI): the kind of
    failure, never the exception's text, which may quote patient names, IDs or report text (a
    database driver's message quotes the values it refused). The traceback goes to the debug log."""
    if isinstance(exc, SQLAlchemyError):
        return f"database error ({type(exc).__name__}: {cause(exc)})"
    if isinstance(exc, OSError):
        return f"file or network error ({type(exc).__name__}{f', errno {exc.errno}' if exc.errno else ''})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"internal error ({type(exc).__name__}); the worker's debug log has the traceback"


class _Heartbeat(threading.Thread):
    """Extends the lease every third of it while the handler runs; carries the latest progress."""

    def __init__(self, worker: Worker, job: ClaimedJob) -> None:
        super().__init__(name=f"heartbeat-{job.id}", daemon=True)
        self.worker, self.job = worker, job
        self.progress: float | None = None
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        interval = max(0.2, self.worker.lease.total_seconds() / 3)
        while not self.stopped.wait(interval):
            try:
                with self.worker.sessions() as session:
                    held = jobs.heartbeat(session=session, job_id=self.job.id, owner=self.worker.owner,
                                          lease=self.worker.lease, progress=self.progress)
            except SQLAlchemyError as exc:
                log.warning("worker: heartbeat of job %d failed: %s", self.job.id, type(exc).__name__)
                continue
            if not held:
                self.lost = True
                log.warning("worker: job %d is no longer ours (lease lost)", self.job.id)
                return


class Worker:
    """Runs jobs of the kinds in ``handlers`` until ``stop`` is set.

    Parameters
    ----------
    sessions
        Session factory of the radservice database.
    handlers
        Job kind -> handler.
    owner
        This worker's name in lease records (host:pid is unique across machines).
    lease
        How long a claim holds without a heartbeat; a dead worker's job is taken again after it.
    poll_interval
        Seconds to wait when the queue is empty.
    """

    def __init__(self, *, sessions: sessionmaker[Session], handlers: Mapping[str, Handler], owner: str,
                 lease: timedelta, poll_interval: float, stop: threading.Event | None = None) -> None:
        self.sessions = sessions
        self.readers = readers_of(sessions)
        self.handlers = dict(handlers)
        self.owner = owner
        self.lease = lease
        self.poll_interval = poll_interval
        self.stop = stop or threading.Event()
        # a handler that says it is urgent (a live dictation: someone is speaking now) goes first
        self.urgent = [kind for kind, handler in self.handlers.items() if getattr(handler, "urgent", False)]
        self._last_reap = 0.0

    def run(self) -> None:
        log.info("worker %s: running job kinds %s", self.owner, ", ".join(sorted(self.handlers)))
        while not self.stop.is_set():
            try:
                ran = self.run_once()
            except SQLAlchemyError as exc:
                log.error("worker %s: database unavailable: %s", self.owner, type(exc).__name__)
                ran = False
            if not ran:
                self.stop.wait(self.poll_interval)
        log.info("worker %s: stopped", self.owner)

    def run_once(self) -> bool:
        """Claim and run one job; False when none was due."""
        self._maybe_reap()
        with self.sessions() as session:
            job = jobs.claim(session=session, owner=self.owner, lease=self.lease, kinds=list(self.handlers),
                             first=self.urgent)
        if job is None:
            return False
        self._run(job)
        return True

    def _maybe_reap(self) -> None:
        # Every worker puts lost jobs back now and then, so recovery needs no other process.
        now = time.monotonic()
        if now - self._last_reap >= self.lease.total_seconds() / 2:
            self._last_reap = now
            with session_scope(self.sessions) as session:
                reaped, exhausted = jobs.reap_expired_jobs(session=session)
                for kind, payload in exhausted:
                    self._failed_for_good(session, kind, payload, jobs.LEASE_LOST)
            if reaped:
                log.warning("worker %s: %d job(s) of lost workers queued again or failed", self.owner, reaped)

    def _failed_for_good(self, session: Session, kind: str, payload: dict[str, Any], reason: str) -> None:
        """A job failed for good: its handler's ``on_failed`` marks what the job worked on (a
        dictation left ``transcribing`` would otherwise stay so for ever)."""
        on_failed = getattr(self.handlers.get(kind), "on_failed", None)
        if on_failed is not None:
            on_failed(session, payload, reason)

    def _run(self, job: ClaimedJob) -> None:
        log.info("worker %s: job %d (%s) attempt %d/%d", self.owner, job.id, job.kind, job.attempts,
                 job.max_attempts)
        beat = _Heartbeat(self, job)
        ctx = JobContext(job=job, sessions=self.sessions, owner=self.owner, readers=self.readers,
                         report_progress=lambda fraction: setattr(beat, "progress", fraction))
        beat.start()
        started = time.perf_counter()
        error: str | None = None
        retry = True
        result: dict[str, Any] = {}
        try:
            result = self.handlers[job.kind](ctx)
        except PermanentJobError as exc:
            error, retry = str(exc), False
        except LeaseLost:
            error = "lease lost"  # not recorded: the job is no longer ours (fail() finds it so)
        except Exception as exc:  # a handler's failure becomes the job's error, never a dead worker
            error = job_error(exc)
            log.error("worker %s: job %d (%s) raised: %s", self.owner, job.id, job.kind, error)
            log.debug("worker %s: job %d traceback", self.owner, job.id, exc_info=True)
        finally:
            beat.stopped.set()
            beat.join()
        elapsed = time.perf_counter() - started
        with session_scope(self.sessions) as session:
            if error is None:
                kept = jobs.complete(session=session, job_id=job.id, owner=self.owner, result=result)
                outcome = "done" if kept else None
            else:
                outcome = jobs.fail(session=session, job_id=job.id, owner=self.owner, error=error, retry=retry)
                if outcome == "failed":  # for good: what it worked on says so, in the same transaction
                    self._failed_for_good(session, job.kind, job.payload, error)
        if outcome is None:
            log.warning("worker %s: job %d finished after its lease was lost; outcome not recorded", self.owner,
                        job.id)
        else:
            log.info("worker %s: job %d (%s) %s in %.2fs%s", self.owner, job.id, job.kind, outcome, elapsed,
                     f": {error}" if error else "")
