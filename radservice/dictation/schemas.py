"""API shapes of dictations and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from radservice.dictation.models import Dictation
from radservice.jobs.models import Job


class DictationAccepted(BaseModel):
    dictation_id: str
    job_id: int


class JobQueued(BaseModel):
    job_id: int


class DictationPublic(BaseModel):
    dictation_id: str
    section: str
    status: str
    audio_format: str
    duration_s: float
    created_at: datetime
    transcript: str
    #: Each word with its start and end (seconds into the audio) and the model's probability.
    words: list[dict[str, Any]] | None
    transcribed_at: datetime | None
    #: Whisper model that wrote ``transcript``.
    transcript_model: str
    #: [[start, end], ...] seconds of speech that came out as no text (flagged on the report).
    unheard: list[list[float]] | None
    #: After a live dictation: none, pending, applied, kept or failed (see FinalPass), and the live
    #: text the accurate pass replaced.
    final_pass: str
    interim_transcript: str
    error: str
    job_id: int | None

    @classmethod
    def of(cls, d: Dictation) -> DictationPublic:
        return cls(dictation_id=d.id, section=d.section, status=d.status, audio_format=d.audio_format,
                   duration_s=d.duration_s, created_at=d.created_at, transcript=d.transcript, words=d.words,
                   transcribed_at=d.transcribed_at, transcript_model=d.transcript_model, unheard=d.unheard,
                   final_pass=d.final_pass, interim_transcript=d.interim_transcript, error=d.error, job_id=d.job_id)


class JobPublic(BaseModel):
    job_id: int
    kind: str
    status: str
    progress: float
    attempts: int
    error: str
    result: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(job_id=job.id, kind=job.kind, status=job.status, progress=job.progress, attempts=job.attempts,
                   error=job.error, result=job.result, created_at=job.created_at, finished_at=job.finished_at)
