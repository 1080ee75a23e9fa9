"""A job's result is written only while its worker holds the lease; a job that fails for good
marks what it worked on; a job's stored error carries no patient data. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.dictation.flows import TranscribeFlow
from radservice.dictation.models import Dictation
from radservice.jobs import service as jobs
from radservice.jobs.models import Job
from radservice.jobs.worker import JobContext, Worker
from radservice.pipeline.transcribe import Audio, Transcript, Word
from tests.integration.test_dictation_flows import _dictation

pytestmark = pytest.mark.integration
LEASE = timedelta(seconds=30)
PHI = "SYNTHETIC^PATIENT MRN-000123"


class StolenWhileTranscribing:
    """A worker that stalls past its lease: while it transcribes, the job is reaped and claimed
    by another worker."""

    name = "stalls"

    def __init__(self, factory: sessionmaker[Session], job_id: int) -> None:
        self.factory, self.job_id = factory, job_id

    def transcribe(self, audio: Audio, *, prompt: str = "", hotwords: str = "",
                   beam_size: int | None = None) -> Transcript:
        with session_scope(self.factory) as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(lease_owner="other:2"))
        return Transcript(text="lungs clear", words=[Word("lungs", 0, 0.4, 0.9)], duration_s=3.0, model="x")


def test_a_result_is_not_written_after_the_lease_was_lost(factory: sessionmaker[Session], tmp_path: Path) -> None:
    dictation_id, job_id = _dictation(factory, tmp_path)
    flow = TranscribeFlow(transcriber=StolenWhileTranscribing(factory, job_id), data_dir=tmp_path, vocabulary=[])
    worker = Worker(sessions=factory, handlers={"transcribe": flow}, owner="stalled:1", lease=LEASE,
                    poll_interval=0.05)
    assert worker.run_once()
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        assert not dictation.transcript  # the other worker's attempt writes it, once
        assert [j.kind for j in session.scalars(select(Job))] == ["transcribe"]  # no draft job queued twice
        job = session.get_one(Job, job_id)
        assert (job.status, job.lease_owner) == ("running", "other:2")  # the other's claim is untouched


def _died_on_last_attempt(factory: sessionmaker[Session], job_id: int, dictation_id: str) -> None:
    """The job's worker died during its last attempt, while it was transcribing the dictation."""
    with session_scope(factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            status="running", attempts=3, max_attempts=3, lease_owner="dead:1",
            lease_expires_at=utcnow() - timedelta(seconds=1)))
        session.get_one(Dictation, dictation_id).status = "transcribing"


def test_a_job_reaped_after_its_last_attempt_fails_its_dictation(factory: sessionmaker[Session],
                                                                 tmp_path: Path) -> None:
    dictation_id, job_id = _dictation(factory, tmp_path)
    _died_on_last_attempt(factory, job_id, dictation_id)
    flow = TranscribeFlow(transcriber=StolenWhileTranscribing(factory, job_id), data_dir=tmp_path, vocabulary=[])
    worker = Worker(sessions=factory, handlers={"transcribe": flow}, owner="alive:2", lease=LEASE, poll_interval=0.05)
    assert worker.run_once() is False  # it reaped, and found nothing to run
    with factory() as session:
        job = session.get_one(Job, job_id)
        dictation = session.get_one(Dictation, dictation_id)
        assert (job.status, job.error) == ("failed", jobs.LEASE_LOST)
        assert dictation.status == "failed" and jobs.LEASE_LOST in dictation.error


def _raises(exc: BaseException) -> Any:
    def handler(ctx: JobContext) -> dict[str, Any]:
        raise exc
    return handler


@pytest.mark.parametrize("exc", [
    RuntimeError(f"could not parse {PHI}"),
    IntegrityError("INSERT INTO patients ...", {"name": PHI}, Exception(f'Key (name)=({PHI}) already exists')),
    FileNotFoundError(2, f"No such file: /var/audio/{PHI}.wav"),
])
def test_a_job_error_names_the_kind_of_failure_never_patient_data(factory: sessionmaker[Session],
                                                                   exc: BaseException,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with session_scope(factory) as session:
        job_id = jobs.enqueue(session=session, kind="leaky", payload={}, max_attempts=1).id
    worker = Worker(sessions=factory, handlers={"leaky": _raises(exc)}, owner="w:1", lease=LEASE, poll_interval=0.05)
    with caplog.at_level("INFO", logger="radservice"):
        assert worker.run_once()
    with factory() as session:
        job = session.get_one(Job, job_id)
    assert job.status == "failed" and job.error and "SYNTHETIC" not in job.error and "MRN" not in job.error
    assert type(exc).__name__ in job.error
    assert "SYNTHETIC" not in caplog.text  # the traceback is at debug level only


def test_the_reaper_duty_of_serve_fails_the_dictation_too(factory: sessionmaker[Session], tmp_path: Path) -> None:
    from radservice.config import Settings
    from radservice.handlers import failure_markers
    from radservice.jobs import scheduled

    dictation_id, job_id = _dictation(factory, tmp_path)
    _died_on_last_attempt(factory, job_id, dictation_id)
    duty = scheduled.duties(Settings(storage={"data_dir": tmp_path}), factory, failure_markers())["lease-reaper"]
    assert duty.run() == "1 job(s) of lost workers queued again or failed"
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        assert dictation.status == "failed" and jobs.LEASE_LOST in dictation.error
