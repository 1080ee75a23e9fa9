"""Dictation upload, transcription again on demand, and job status."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Response, UploadFile, status

from radservice.api.deps import CurrentUser, ReadAuditDep, RowId, SessionDep, SettingsDep, require_role, study_or_404
from radservice.audit import service as audit
from radservice.db.session import begin_write
from radservice.dictation import service as dictations
from radservice.dictation.audio import MAX_STRETCH_S, AudioRejected, PlaybackRefused, playback_wav, store_upload
from radservice.dictation.models import DictationStatus, Section
from radservice.dictation.schemas import DictationAccepted, DictationPublic, JobPublic, JobQueued
from radservice.jobs import service as jobs
from radservice.users.models import Role, User

router = APIRouter(prefix="/api/v1", tags=["dictation"])

def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c}]" for c in word)


#: The sections a dictation may be for, in any case (the schema says exactly what is accepted).
_SECTION_PATTERN = rf"^\s*({'|'.join(_any_case(s.value) for s in Section)})\s*$"

#: A dictation whose audio is still arriving or being closed: transcribing it now would merge a
#: partial text and end the live job.
_STILL_RECORDING = (DictationStatus.RECORDING.value, DictationStatus.FINALIZING.value)

Dictator = Annotated[User, Depends(require_role(Role.RADIOLOGIST, Role.RESIDENT))]


def _refuse(exc: dictations.DictationError) -> HTTPException:
    code = status.HTTP_409_CONFLICT if exc.kind == "cancelled" else status.HTTP_422_UNPROCESSABLE_CONTENT
    return HTTPException(code, detail=str(exc))


@router.post("/studies/{accession}/dictations", status_code=status.HTTP_202_ACCEPTED,
             response_model=DictationAccepted)
def upload_dictation(
    accession: str,
    request: Request,
    user: Dictator,
    session: SessionDep,
    settings: SettingsDep,
    audio: Annotated[UploadFile, File(description="WAV, WebM/Opus, OGG/Opus, MP3 or M4A")],
    section: Annotated[str, Form(description="findings or impression (any case)",
                                 pattern=_SECTION_PATTERN)] = "findings",
    issuer: Annotated[str | None, Query()] = None,
) -> DictationAccepted:
    """Store the recording and queue its transcription; 202 once both are committed."""
    limit = settings.storage.max_audio_mb << 20
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + (1 << 16):
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            detail=f"audio larger than the limit of {settings.storage.max_audio_mb} MiB")
    try:
        parsed = dictations.parse_section(section)
        study = study_or_404(session, accession, issuer)
        dictations.check_dictatable(study)
    except dictations.DictationError as exc:
        raise _refuse(exc) from None
    session.commit()  # no transaction stays open while the upload is copied and decoded
    try:
        stored = store_upload(audio.file, data_dir=settings.storage.data_dir, max_bytes=limit,
                              max_seconds=settings.storage.max_audio_seconds)
    except AudioRejected as exc:
        raise HTTPException(exc.status, detail=str(exc)) from None
    try:
        # the checks again, in the write transaction: the study may have been cancelled meanwhile
        begin_write(session)
        session.refresh(study)
        try:
            dictations.check_dictatable(study)
        except dictations.DictationError as exc:
            raise _refuse(exc) from None
        dictation, job = dictations.add_dictation(session=session, study=study, section=parsed, audio=stored,
                                                  user_id=user.id, max_attempts=settings.worker.max_attempts)
        audit.record(session=session, actor=user.username, user_id=user.id, action="dictation.created",
                     entity_type="study", entity_id=study.accession_number,
                     detail={"dictation_id": dictation.id, "section": parsed.value, "seconds": stored.duration_s})
        session.commit()
    except BaseException:
        # Nothing committed: the stored file would belong to no dictation.
        (settings.storage.data_dir / stored.relative_path).unlink(missing_ok=True)
        raise
    return DictationAccepted(dictation_id=dictation.id, job_id=job.id)


@router.get("/dictations/{dictation_id}", response_model=DictationPublic)
def get_dictation(dictation_id: str, user: CurrentUser, session: SessionDep,
                  read_audit: ReadAuditDep) -> DictationPublic:
    """One dictation with its latest transcript."""
    dictation = dictations.get(session=session, dictation_id=dictation_id)
    if dictation is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dictation {dictation_id!r}")
    public = DictationPublic.of(dictation)
    read_audit(actor=user.username, user_id=user.id, action="dictation.read",
               entity_type="dictation", entity_id=dictation.id)
    return public


#: A time in a recording (s).
_SECONDS = Query(ge=0, le=24 * 3600)
#: Plays decoded at once: more wait their turn briefly, then get 503 with Retry-After (a held
#: key or a script cannot tie up the server's threads and memory decoding audio).
_PLAYS = threading.BoundedSemaphore(2)
_PLAY_WAIT_S = 2.0


@router.get("/dictations/{dictation_id}/audio", response_class=Response,
            responses={200: {"content": {"audio/wav": {}}, "description": "16 kHz mono 16-bit WAV"},
                       404: {"description": "no such dictation"},
                       409: {"description": "still recording"},
                       410: {"description": "the audio was removed (retention) or is missing"},
                       503: {"description": "too many plays at once: try again after Retry-After"}})
def dictation_audio(
    dictation_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep, read_audit: ReadAuditDep,
    start: Annotated[float, _SECONDS] = 0.0,
    end: Annotated[float | None, _SECONDS] = None,
) -> Response:
    """The stretch of the dictation's audio from ``start`` to ``end`` (s, on the timeline of its
    words' times; at most 120 s, the default), for playing a word or a sentence back; every play
    is audited."""
    dictation = dictations.get(session=session, dictation_id=dictation_id)
    if dictation is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dictation {dictation_id!r}")
    if dictation.audio_path is None:
        raise HTTPException(status.HTTP_410_GONE, detail="the dictation's audio is no longer stored")
    if dictation.status in _STILL_RECORDING:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"dictation {dictation.id} is {dictation.status}: its audio is not complete")
    parts, fmt = dictations.audio_parts(dictation, Path(settings.storage.data_dir)), dictation.audio_format
    where = {"accession": dictation.study.accession_number, "issuer": dictation.study.accession_issuer}
    session.commit()  # no transaction stays open while the audio is decoded
    if not _PLAYS.acquire(timeout=_PLAY_WAIT_S):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="too many plays at once; try again",
                            headers={"Retry-After": "1"})
    try:
        body = playback_wav(parts, fmt, start_s=start, end_s=start + MAX_STRETCH_S if end is None else end)
    except PlaybackRefused as exc:
        raise HTTPException(exc.status, detail=str(exc)) from None
    finally:
        _PLAYS.release()
    read_audit(actor=user.username, user_id=user.id, action="dictation.audio.read",
               entity_type="dictation", entity_id=dictation_id,
               detail={**where, "start": start, "end": end})
    return Response(body, media_type="audio/wav", headers={"Cache-Control": "no-store"})


@router.post("/dictations/{dictation_id}/transcribe", status_code=status.HTTP_202_ACCEPTED,
             response_model=JobQueued)
def transcribe_again(dictation_id: str, user: Dictator, session: SessionDep, settings: SettingsDep) -> JobQueued:
    """Queue the dictation's transcription again (after an interruption or a failure)."""
    begin_write(session)
    dictation = dictations.get(session=session, dictation_id=dictation_id, for_update=True)
    if dictation is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dictation {dictation_id!r}")
    if dictation.audio_path is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the dictation's audio is no longer stored")
    if dictation.status in _STILL_RECORDING:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"dictation {dictation.id} is {dictation.status}: "
                            "its audio is not complete; stop it (or let it be interrupted) first")
    job = dictations.queue_transcription(session=session, dictation=dictation,
                                         max_attempts=settings.worker.max_attempts)
    audit.record(session=session, actor=user.username, user_id=user.id, action="dictation.transcribe",
                 entity_type="dictation", entity_id=dictation.id, detail={"job_id": job.id})
    session.commit()
    return JobQueued(job_id=job.id)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: RowId, user: CurrentUser, session: SessionDep, read_audit: ReadAuditDep) -> JobPublic:
    """A job's status, progress, error and result."""
    job = jobs.get(session=session, job_id=job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job {job_id}")
    public = JobPublic.of(job)
    if job.result and "text" in job.result:
        read_audit(actor=user.username, user_id=user.id, action="job.read",
                   entity_type="job", entity_id=str(job.id))
    return public
