"""The job queue's operations: enqueue, claim under a lease, finish, fail or retry, reap lost leases.

Claims take the oldest due job in one short write transaction. On PostgreSQL the row is
locked with ``FOR UPDATE SKIP LOCKED`` so many workers on many machines never take the same
job; on SQLite the transaction itself holds the database's single write lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from radservice.db.base import utcnow
from radservice.jobs.models import Job, JobStatus

#: Longest error text kept on a job (the end of a traceback is never stored, only a reason).
MAX_ERROR = 2000
LEASE_LOST = "worker lost: lease expired before the job finished"


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker now holds until ``lease_expires_at``."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_expires_at: datetime


def enqueue(*, session: Session, kind: str, payload: dict[str, Any], max_attempts: int = 3,
            run_after: datetime | None = None) -> Job:
    """Add a job to the caller's transaction (it is queued when that commits)."""
    now = utcnow()
    job = Job(kind=kind, payload=payload, status=JobStatus.QUEUED.value, attempts=0, max_attempts=max_attempts,
              run_after=run_after or now, progress=0.0, error="", created_at=now, updated_at=now)
    session.add(job)
    session.flush()
    return job


def claim(*, session: Session, owner: str, lease: timedelta, kinds: list[str] | None = None,
          first: list[str] | None = None) -> ClaimedJob | None:
    """Take the oldest due queued job for ``owner`` and commit the claim; None when there is none.
    Jobs of the kinds in ``first`` (someone is waiting on them now) go before older ones."""
    now = utcnow()
    order = [case((Job.kind.in_(first), 0), else_=1)] if first else []
    query = (select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.run_after <= now)
             .order_by(*order, Job.run_after, Job.id).limit(1).with_for_update(skip_locked=True))
    if kinds is not None:
        query = query.where(Job.kind.in_(kinds))
    job_id = session.scalar(query)
    if job_id is None:
        session.commit()
        return None
    expires = now + lease
    row = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.RUNNING.value, lease_owner=owner, lease_expires_at=expires,
                attempts=Job.attempts + 1, updated_at=now)
        .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
    ).first()
    session.commit()
    if row is None:
        return None
    return ClaimedJob(row.id, row.kind, dict(row.payload or {}), row.attempts, row.max_attempts, expires)


def _held(job_id: int, owner: str) -> Any:
    # Every write of a running job checks it still holds the lease, unexpired: a worker that
    # stalled past its lease may be reaped at any moment and the job run elsewhere; it must not
    # renew, complete or fail it (the reaper does that), nor overwrite another's outcome.
    return ((Job.id == job_id) & (Job.status == JobStatus.RUNNING.value) & (Job.lease_owner == owner)
            & (Job.lease_expires_at > utcnow()))


def heartbeat(*, session: Session, job_id: int, owner: str, lease: timedelta,
              progress: float | None = None) -> bool:
    """Extend the lease (and record progress); False when the job is no longer ours."""
    now = utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + lease, "updated_at": now}
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, progress))
    held: int = session.execute(update(Job).where(_held(job_id, owner)).values(**values)).rowcount  # type: ignore[attr-defined]
    session.commit()
    return held == 1


def complete(*, session: Session, job_id: int, owner: str, result: dict[str, Any]) -> bool:
    """Mark the job done with its result, in the caller's transaction; False when it is no longer ours."""
    now = utcnow()
    done: int = session.execute(update(Job).where(_held(job_id, owner)).values(
        status=JobStatus.DONE.value, result=result, progress=1.0, error="", lease_owner=None,
        lease_expires_at=None, finished_at=now, updated_at=now)).rowcount  # type: ignore[attr-defined]
    return done == 1


def fail(*, session: Session, job_id: int, owner: str, error: str, retry: bool,
         backoff: timedelta = timedelta(seconds=5)) -> str | None:
    """Record a failed attempt: queued again after ``backoff`` while attempts remain and ``retry``
    holds, else failed for good. Returns the new status, or None when the job is no longer ours."""
    now = utcnow()
    row = session.execute(select(Job.attempts, Job.max_attempts).where(_held(job_id, owner))).first()
    if row is None:
        return None
    again = retry and row.attempts < row.max_attempts
    status = JobStatus.QUEUED if again else JobStatus.FAILED
    session.execute(update(Job).where(_held(job_id, owner)).values(
        status=status.value, error=error[:MAX_ERROR], lease_owner=None, lease_expires_at=None,
        run_after=now + backoff * row.attempts if again else Job.run_after,
        finished_at=None if again else now, updated_at=now))
    return status.value


def holds(*, session: Session, job_id: int, owner: str) -> bool:
    """Does ``owner`` still hold the running job, with its lease not expired (an expired lease may
    be reaped and the job run elsewhere at any moment)? Its row stays locked until the caller's
    transaction ends (PostgreSQL; SQLite's write lock is held already), so the lease cannot be
    reaped between this check and the write that depends on it."""
    return session.scalar(select(Job.id).where(_held(job_id, owner)).with_for_update()) is not None


def reap_expired_jobs(*, session: Session, now: datetime | None = None) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """Put jobs whose worker died (lease expired) back in the queue, or fail them when their
    attempts are used up, in the caller's transaction. Returns how many were reaped, and the kind
    and payload of each failed for good (what it worked on must be marked failed too)."""
    now = now or utcnow()
    expired = Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now
    exhausted_rows = session.execute(select(Job.kind, Job.payload).where(
        *expired, Job.attempts >= Job.max_attempts).with_for_update()).all()
    count = _reap(session, now)
    return count, [(row.kind, dict(row.payload or {})) for row in exhausted_rows]


def reap_expired(*, session: Session, now: datetime | None = None) -> int:
    """``reap_expired_jobs`` committed; returns how many jobs were reaped."""
    count = _reap(session, now or utcnow())
    session.commit()
    return count


def _reap(session: Session, now: datetime) -> int:
    exhausted = Job.attempts >= Job.max_attempts
    count = session.execute(
        update(Job).where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now).values(
            status=case((exhausted, JobStatus.FAILED.value), else_=JobStatus.QUEUED.value),
            error=LEASE_LOST, lease_owner=None, lease_expires_at=None, run_after=now,
            finished_at=case((exhausted, now), else_=None), updated_at=now)
    ).rowcount  # type: ignore[attr-defined]
    return int(count)


def get(*, session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(*, session: Session, status: str | None = None, limit: int = 50) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    return list(session.scalars(query).all())


def backlog(*, session: Session) -> tuple[dict[tuple[str, str], int], float]:
    """For monitoring: jobs queued or running by (kind, status), and the age in seconds of the
    oldest queued job (0 when none waits)."""
    counts = {(str(kind), str(status)): int(n) for kind, status, n in session.execute(
        select(Job.kind, Job.status, func.count())
        .where(Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)))
        .group_by(Job.kind, Job.status))}
    oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED.value))
    if oldest is None:
        return counts, 0.0
    if oldest.tzinfo is None:  # an aggregate may come back naive (UTC) on SQLite
        oldest = oldest.replace(tzinfo=UTC)
    return counts, max(0.0, (utcnow() - oldest).total_seconds())
