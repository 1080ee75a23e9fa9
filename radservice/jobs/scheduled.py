"""Named periodic duties, run by APScheduler in `radservice serve` and by hand with `radservice jobs run NAME`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from radservice.config import Settings
from radservice.dictation import service as dictations
from radservice.jobs import service as jobs

log = logging.getLogger("radservice.scheduler")


@dataclass(frozen=True)
class Duty:
    name: str
    every: timedelta
    description: str
    run: Callable[[], str]


def duties(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, Duty]:
    """Every periodic duty by name; each returns a one-line summary of what it did."""

    def reap() -> str:
        with sessions() as session:
            return f"{jobs.reap_expired(session=session)} job(s) of lost workers queued again or failed"

    def purge() -> str:
        with sessions() as session:
            removed = dictations.purge_audio(session=session, data_dir=settings.storage.data_dir,
                                             older_than=timedelta(days=settings.storage.audio_retention_days))
        return f"{removed} audio file(s) older than {settings.storage.audio_retention_days} days removed"

    lease = timedelta(seconds=max(5.0, settings.worker.lease_s / 2))
    return {duty.name: duty for duty in (
        Duty("lease-reaper", lease, "queue again (or fail) jobs whose worker stopped renewing its lease", reap),
        Duty("audio-retention", timedelta(hours=6), "delete dictation audio past storage.audio_retention_days",
             purge),
    )}


def _logged(duty: Duty) -> Callable[[], None]:
    def run() -> None:
        try:
            log.info("duty %s: %s", duty.name, duty.run())
        except Exception:  # a failed duty is logged and runs again at its next time
            log.exception("duty %s failed", duty.name)
    return run


def start_scheduler(settings: Settings, sessions: sessionmaker[Session]) -> BackgroundScheduler:
    """A background scheduler running every duty at its interval (one run at a time per duty)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    for duty in duties(settings, sessions).values():
        scheduler.add_job(_logged(duty), "interval", seconds=duty.every.total_seconds(), id=duty.name,
                          name=duty.name, max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler
