"""Dictation records: accept a stored recording against a study section and queue its transcription."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from radservice.db.base import utcnow
from radservice.dictation.audio import StoredAudio
from radservice.dictation.models import Dictation, DictationStatus, Section
from radservice.jobs import service as jobs
from radservice.jobs.models import Job
from radservice.worklist.models import Study, StudyStatus

TRANSCRIBE = "transcribe"


class DictationError(Exception):
    """A dictation that cannot be taken: ``kind`` says why (``cancelled``, ``section``, ``unknown``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_section(value: str) -> Section:
    try:
        return Section(value.strip().lower())
    except ValueError:
        raise DictationError("section", f"unknown section {value!r}; one of: "
                             f"{', '.join(s.value for s in Section)}") from None


def check_dictatable(study: Study) -> None:
    """Raise DictationError('cancelled') for a study that left the worklist."""
    if study.status == StudyStatus.CANCELLED.value:
        raise DictationError("cancelled", f"study {study.accession_number} is cancelled")


def add_dictation(*, session: Session, study: Study, section: Section, audio: StoredAudio, user_id: int | None,
                  max_attempts: int) -> tuple[Dictation, Job]:
    """Record the dictation and queue its transcription, in the caller's transaction."""
    check_dictatable(study)
    dictation = Dictation(id=audio.uuid, study_id=study.id, section=section.value,
                          status=DictationStatus.RECEIVED.value, audio_path=audio.relative_path,
                          audio_format=audio.format, audio_bytes=audio.size_bytes, duration_s=audio.duration_s,
                          created_by=user_id, created_at=utcnow(), transcript="", error="")
    session.add(dictation)
    job = queue_transcription(session=session, dictation=dictation, max_attempts=max_attempts)
    if study.status == StudyStatus.SCHEDULED.value:
        study.status = StudyStatus.IN_PROGRESS.value
    return dictation, job


def queue_transcription(*, session: Session, dictation: Dictation, max_attempts: int) -> Job:
    """A transcription job for the dictation (again, for a retry by hand); the dictation points at it."""
    session.flush()
    job = jobs.enqueue(session=session, kind=TRANSCRIBE, payload={"dictation_id": dictation.id},
                       max_attempts=max_attempts)
    dictation.job_id = job.id
    return job


def get(*, session: Session, dictation_id: str) -> Dictation | None:
    return session.get(Dictation, dictation_id)


def for_study(*, session: Session, study_id: int) -> list[Dictation]:
    return list(session.scalars(select(Dictation).where(Dictation.study_id == study_id)
                                .order_by(Dictation.created_at)).all())


def purge_audio(*, session: Session, data_dir: Path, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete stored audio older than the retention period; the transcript stays. Returns files removed."""
    cutoff = (now or utcnow()) - older_than
    rows = session.execute(select(Dictation.id, Dictation.audio_path).where(
        Dictation.created_at < cutoff, Dictation.audio_path.is_not(None))).all()
    for dictation_id, relative in rows:
        (data_dir / relative).unlink(missing_ok=True)
        session.execute(update(Dictation).where(Dictation.id == dictation_id).values(audio_path=None))
    session.commit()
    return len(rows)
