"""Named periodic duties, run by APScheduler in `radservice serve` and by hand with `radservice jobs run NAME`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from radservice.config import Settings
from radservice.db.session import readers_of, session_scope
from radservice.dictation import service as dictations
from radservice.jobs import service as jobs
from radservice.jobs.worker import OnFailed
from radservice.users import signin

log = logging.getLogger("radservice.scheduler")


@dataclass(frozen=True)
class Duty:
    name: str
    every: timedelta
    description: str
    run: Callable[[], str]


def duties(settings: Settings, sessions: sessionmaker[Session],
           on_failed: Mapping[str, OnFailed] | None = None) -> dict[str, Duty]:
    """Every periodic duty by name; each returns a one-line summary of what it did.

    ``on_failed``: job kind -> what marks the job's subject failed when the reaper fails a job for
    good (radservice.handlers.failure_markers; the worker's handlers do the same)."""

    def reap() -> str:
        with session_scope(sessions) as session:
            count, exhausted = jobs.reap_expired_jobs(session=session)
            for kind, payload in exhausted:
                marker = (on_failed or {}).get(kind)
                if marker is not None:
                    marker(session, payload, jobs.LEASE_LOST)
        return f"{count} job(s) of lost workers queued again or failed"

    def purge() -> str:
        with sessions() as session:
            removed = dictations.purge_audio(session=session, data_dir=settings.storage.data_dir,
                                             older_than=timedelta(days=settings.storage.audio_retention_days))
        return f"{removed} audio file(s) older than {settings.storage.audio_retention_days} days removed"

    readers = readers_of(sessions)

    def sweep() -> str:
        with readers() as session:  # reads only: no write lock while the folder is walked
            removed = dictations.sweep_orphan_audio(session=session, data_dir=settings.storage.data_dir)
        return f"{removed} orphan audio file(s) older than a day removed"

    def prune_sign_in() -> str:
        with session_scope(sessions) as session:
            removed = signin.prune(session=session, policy=signin.Policy.of(settings.auth))
        return f"{removed} old sign-in failure(s) and page session(s) removed"

    lease = timedelta(seconds=max(5.0, settings.worker.lease_s / 2))
    return {duty.name: duty for duty in (
        Duty("lease-reaper", lease, "queue again (or fail) jobs whose worker stopped renewing its lease", reap),
        Duty("audio-retention", timedelta(hours=6), "delete dictation audio past storage.audio_retention_days",
             purge),
        Duty("audio-orphans", timedelta(hours=6), "delete audio files no dictation names (a crashed upload), "
             "older than a day", sweep),
        Duty("sign-in-prune", timedelta(hours=1), "delete sign-in failures no lock needs any more and page "
             "sessions past their age", prune_sign_in),
    )}


def _logged(duty: Duty) -> Callable[[], None]:
    def run() -> None:
        try:
            log.info("duty %s: %s", duty.name, duty.run())
        except Exception as exc:  # a failed duty is logged and runs again at its next time
            log.error("duty %s failed: %s (traceback at debug level)", duty.name, type(exc).__name__)
            log.debug("duty %s traceback", duty.name, exc_info=True)
    return run


def start_scheduler(settings: Settings, sessions: sessionmaker[Session],
                    on_failed: Mapping[str, OnFailed] | None = None) -> BackgroundScheduler:
    """A background scheduler running every duty at its interval (one run at a time per duty)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    for duty in duties(settings, sessions, on_failed).values():
        scheduler.add_job(_logged(duty), "interval", seconds=duty.every.total_seconds(), id=duty.name,
                          name=duty.name, max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler
