"""The durable job queue: claims, leases, retries and lost workers, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.jobs import service as jobs
from radservice.jobs.models import Job
from radservice.jobs.worker import Worker
from tests import job_handlers

LEASE = timedelta(seconds=30)


def _enqueue(factory: sessionmaker[Session], kind: str, n: int = 1, **payload: object) -> list[int]:
    with session_scope(factory) as session:
        return [jobs.enqueue(session=session, kind=kind, payload=dict(payload), max_attempts=3).id for _ in range(n)]


def _job(factory: sessionmaker[Session], job_id: int) -> Job:
    with factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _worker(factory: sessionmaker[Session], owner: str = "test:1", lease: timedelta = LEASE) -> Worker:
    return Worker(sessions=factory, handlers=job_handlers.handlers(None), owner=owner,  # type: ignore[arg-type]
                  lease=lease, poll_interval=0.05)


def test_claim_takes_oldest_due_job_once(factory: sessionmaker[Session]) -> None:
    first, second = _enqueue(factory, "record", 2)
    with session_scope(factory) as session:
        jobs.enqueue(session=session, kind="record", payload={}, run_after=utcnow() + timedelta(hours=1))
    with factory() as session:
        a = jobs.claim(session=session, owner="w1", lease=LEASE)
        b = jobs.claim(session=session, owner="w2", lease=LEASE)
        c = jobs.claim(session=session, owner="w3", lease=LEASE)
    assert a is not None and b is not None and c is None  # the delayed job is not due
    assert (a.id, b.id) == (first, second) and a.attempts == 1
    job = _job(factory, first)
    assert job.status == "running" and job.lease_owner == "w1" and job.lease_expires_at is not None


def test_urgent_kinds_are_claimed_before_older_jobs(factory: sessionmaker[Session]) -> None:
    (accurate,) = _enqueue(factory, "transcribe_final")
    (draft,) = _enqueue(factory, "draft_report")
    (live,) = _enqueue(factory, "transcribe_live")
    with factory() as session:
        order = [jobs.claim(session=session, owner="w", lease=LEASE, first=["transcribe_live"]) for _ in range(3)]
    assert [c.id for c in order if c is not None] == [live, accurate, draft]


def test_a_worker_takes_its_urgent_handlers_kinds_first(factory: sessionmaker[Session]) -> None:
    class Live:
        urgent = True

    worker = Worker(sessions=factory, handlers={"record": lambda ctx: {}, "live": Live()},  # type: ignore[dict-item]
                    owner="w", lease=LEASE, poll_interval=0.05)
    assert worker.urgent == ["live"]


def test_worker_runs_job_and_records_result(factory: sessionmaker[Session], tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    (job_id,) = _enqueue(factory, "record", log=str(log))
    assert _worker(factory).run_once() is True
    job = _job(factory, job_id)
    assert (job.status, job.progress, job.error, job.lease_owner) == ("done", 1.0, "", None)
    assert job.result is not None and "pid" in job.result and job.finished_at is not None
    assert log.read_text().split()[:2] == ["run", str(job_id)]
    assert _worker(factory).run_once() is False  # nothing left


def test_failure_retries_then_fails_with_last_error(factory: sessionmaker[Session], tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    (job_id,) = _enqueue(factory, "flaky", log=str(log))
    worker = _worker(factory)
    for attempt in (1, 2, 3):
        with session_scope(factory) as session:  # skip the backoff wait
            session.get_one(Job, job_id).run_after = utcnow()
        assert worker.run_once()
        job = _job(factory, job_id)
        assert job.attempts == attempt and job.error.startswith("internal error (RuntimeError)")
        assert job.status == ("failed" if attempt == 3 else "queued")
    assert len(log.read_text().splitlines()) == 3
    assert _job(factory, job_id).finished_at is not None


def test_permanent_error_fails_without_retry(factory: sessionmaker[Session]) -> None:
    (job_id,) = _enqueue(factory, "refuse")
    assert _worker(factory).run_once()
    job = _job(factory, job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 1, "bad input, no retry")


def test_lost_worker_job_is_taken_again_and_late_outcome_ignored(factory: sessionmaker[Session]) -> None:
    (job_id,) = _enqueue(factory, "record")
    with factory() as session:
        claimed = jobs.claim(session=session, owner="dead:1", lease=timedelta(seconds=-1))  # already expired
    assert claimed is not None
    with factory() as session:
        assert jobs.reap_expired(session=session) == 1
    job = _job(factory, job_id)
    assert (job.status, job.error, job.lease_owner) == ("queued", jobs.LEASE_LOST, None)
    with factory() as session:
        again = jobs.claim(session=session, owner="alive:2", lease=LEASE)
    assert again is not None and again.id == job_id and again.attempts == 2
    # The first worker wakes up and tries to finish: the job is no longer its own.
    with session_scope(factory) as session:
        assert jobs.complete(session=session, job_id=job_id, owner="dead:1", result={"late": True}) is False
    with session_scope(factory) as session:
        assert jobs.complete(session=session, job_id=job_id, owner="alive:2", result={"ok": True}) is True
    assert _job(factory, job_id).result == {"ok": True}


def test_lease_expiry_after_last_attempt_fails_the_job(factory: sessionmaker[Session]) -> None:
    (job_id,) = _enqueue(factory, "record")
    for _ in range(3):
        with factory() as session:
            assert jobs.claim(session=session, owner="dead", lease=timedelta(seconds=-1)) is not None
            jobs.reap_expired(session=session)
    job = _job(factory, job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 3, jobs.LEASE_LOST)


def test_heartbeat_keeps_a_long_job_alive(factory: sessionmaker[Session], tmp_path: Path) -> None:
    # A 4 s job under a 1.5 s lease finishes once: the heartbeat renews the lease (every 0.5 s, so
    # one slow beat is survived) and a second worker reaping and polling meanwhile never takes it.
    log = tmp_path / "runs.log"
    (job_id,) = _enqueue(factory, "slow", log=str(log), seconds=4)
    lease = timedelta(seconds=1.5)
    first = _worker(factory, "w1", lease)
    runner = threading.Thread(target=first.run_once)
    runner.start()
    # the first worker's thread must have claimed the job before the second polls (on a loaded
    # machine the thread can start late, and the second worker would take the job fairly)
    deadline = time.monotonic() + 10
    while _job(factory, job_id).lease_owner != "w1" and time.monotonic() < deadline:
        time.sleep(0.01)
    second = _worker(factory, "w2", lease)
    while runner.is_alive():
        assert second.run_once() is False
        time.sleep(0.05)  # a real worker waits poll_interval_s between empty polls
    runner.join()
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "end"]
    job = _job(factory, job_id)
    assert (job.status, job.attempts) == ("done", 1)
