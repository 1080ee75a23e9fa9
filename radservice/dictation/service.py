"""Dictation records: accept a stored recording against a study section and queue its transcription."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from radservice.db.base import utcnow
from radservice.dictation.audio import AUDIO_DIR, StoredAudio
from radservice.dictation.models import Dictation, DictationStatus, FinalPass, Section
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
    _mark_in_progress(study)
    return dictation, job


def _mark_in_progress(study: Study) -> None:
    """A study someone dictates on has left the scheduled state."""
    if study.status == StudyStatus.SCHEDULED.value:
        study.status = StudyStatus.IN_PROGRESS.value


def _queue(session: Session, dictation: Dictation, kind: str, max_attempts: int,
           extra: dict[str, object] | None = None) -> Job:
    """A job of ``kind`` for the dictation (ids only in its payload); the dictation points at it."""
    session.flush()
    job = jobs.enqueue(session=session, kind=kind, payload={"dictation_id": dictation.id, **(extra or {})},
                       max_attempts=max_attempts)
    dictation.job_id = job.id
    return job


def queue_transcription(*, session: Session, dictation: Dictation, max_attempts: int) -> Job:
    """A transcription job for the dictation (again, for a retry by hand)."""
    return _queue(session, dictation, TRANSCRIBE, max_attempts)


def get(*, session: Session, dictation_id: str, for_update: bool = False) -> Dictation | None:
    """The dictation; ``for_update`` locks its row (PostgreSQL) until the caller commits."""
    if for_update:
        return session.get(Dictation, dictation_id, with_for_update=True, populate_existing=True)
    return session.get(Dictation, dictation_id)


def for_study(*, session: Session, study_id: int) -> list[Dictation]:
    return list(session.scalars(select(Dictation).where(Dictation.study_id == study_id)
                                .order_by(Dictation.created_at)).all())


def purge_audio(*, session: Session, data_dir: Path, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete stored audio older than the retention period, every part of it (a resumed live
    dictation has several); the transcript stays. Returns files removed."""
    cutoff = (now or utcnow()) - older_than
    rows = session.execute(select(Dictation.id, Dictation.audio_path, Dictation.audio_parts).where(
        Dictation.created_at < cutoff, Dictation.audio_path.is_not(None))).all()
    session.rollback()
    removed = 0
    for dictation_id, relative, parts in rows:
        # the row first (a short write): a crash before the files go leaves orphans for the sweep,
        # never a row naming deleted audio; no file work while the write lock is held
        session.execute(update(Dictation).where(Dictation.id == dictation_id).values(audio_path=None))
        session.commit()
        for path in _part_paths(data_dir, relative, parts):
            if path.exists():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _part_paths(data_dir: Path, relative: str, parts: int) -> list[Path]:
    """Every part of a recording whose first part is ``relative`` (part k > 1 is NAME.k.ext)."""
    return [data_dir / _part_name(relative, k) for k in range(1, parts + 1)]


def _part_name(relative: str, part: int) -> str:
    if part == 1:
        return relative
    stem, _, ext = relative.rpartition(".")
    return f"{stem}.{part}.{ext}"


def sweep_orphan_audio(*, session: Session, data_dir: Path, older_than: timedelta = timedelta(days=1),
                       now: datetime | None = None) -> int:
    """Delete files in the audio store that no dictation names and that are older than
    ``older_than``: a partial upload left by a crash (``.NAME.part``), or a file renamed into
    place by an API killed before its row was committed. Younger files may still be on their
    way in. Returns files removed."""
    folder = data_dir / AUDIO_DIR
    if not folder.is_dir():
        return 0
    cutoff = ((now or utcnow()) - older_than).timestamp()
    named = {str(path.relative_to(data_dir)) for _, relative, parts in session.execute(
        select(Dictation.id, Dictation.audio_path, Dictation.audio_parts).where(Dictation.audio_path.is_not(None)))
        for path in _part_paths(data_dir, relative, parts)}
    session.rollback()  # no transaction open while the folder is walked
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and f"{AUDIO_DIR}/{path.name}" not in named and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# --- live dictation (WebSocket) ------------------------------------------------------------

TRANSCRIBE_LIVE = "transcribe_live"
#: The accurate pass over a finished live dictation (dictation.flows.FinalTranscribeFlow).
TRANSCRIBE_FINAL = "transcribe_final"


def fail_final_pass(*, session: Session, dictation_id: str, reason: str) -> bool:
    """The accurate pass of a dictation gave up: the live text stays, the dictation says why.
    False when the pass was not pending (done, or never asked for)."""
    dictation = session.get(Dictation, dictation_id)
    if dictation is None or dictation.final_pass != FinalPass.PENDING.value:
        return False
    dictation.final_pass = FinalPass.FAILED.value
    dictation.error = reason
    return True


def part_path(dictation: Dictation, part: int) -> str:
    """Where part ``part`` of a recording lives, relative to the data dir (part 1 is audio_path)."""
    assert dictation.audio_path is not None
    return _part_name(dictation.audio_path, part)


def audio_parts(dictation: Dictation, data_dir: Path) -> list[Path]:
    """Every stored part of a dictation's audio, in order."""
    if dictation.audio_path is None:
        return []
    return _part_paths(data_dir, dictation.audio_path, dictation.audio_parts)


def start_live(*, session: Session, study: Study, section: Section, user_id: int | None, dictation_id: str,
               max_attempts: int) -> tuple[Dictation, Job]:
    """A new live dictation (recording) and the job that transcribes it as it arrives."""
    check_dictatable(study)
    dictation = Dictation(id=dictation_id, study_id=study.id, section=section.value,
                          status=DictationStatus.RECORDING.value, audio_path=None, audio_format="",
                          audio_bytes=0, duration_s=0.0, created_by=user_id, created_at=utcnow(), transcript="",
                          error="", audio_parts=1, stream_session=1, stream_epoch=0, partial_seq=0,
                          partial_committed="", partial_text="", live_seen_at=utcnow(), part_speakers=[user_id])
    session.add(dictation)
    job = _queue(session, dictation, TRANSCRIBE_LIVE, max_attempts, {"session": 1})
    _mark_in_progress(study)
    return dictation, job


#: A live dictation whose API has not been seen for this long is abandoned (the API was killed or
#: lost its connection): a worker ends its live job and it may be resumed. The API renews
#: ``live_seen_at`` every LIVE_BEAT_S while the socket is open.
LIVE_STALE = timedelta(seconds=20)
LIVE_BEAT_S = 2.0


def abandoned(dictation: Dictation | LiveState, now: datetime | None = None) -> bool:
    """Recording, but its API has not been seen for LIVE_STALE (killed, or cut off)."""
    seen = dictation.live_seen_at
    return dictation.status == DictationStatus.RECORDING.value and (
        seen is None or seen < (now or utcnow()) - LIVE_STALE)


def resume_live(*, session: Session, dictation: Dictation, max_attempts: int, user_id: int | None = None,
                user_role: str = "", others_roles: Sequence[str] = (), same_part: bool = False) -> Job:
    """Continue an interrupted (or abandoned) dictation in a new part, spoken by ``user_id``; a
    new live job decodes every part. Only the dictation's author resumes it, or a user whose
    role is in ``others_roles`` (``auth.resume_others_roles``).

    ``same_part``: the connection continues the same recording (the browser's recorder kept
    going through a network cut): its audio is appended to the current part, from the byte
    the store holds, instead of starting a new part with its own header.

    Raises
    ------
    DictationError
        ``state`` when the dictation is neither interrupted nor abandoned; ``forbidden`` for
        another user's dictation, or another speaker's part to continue.
    """
    if dictation.status != DictationStatus.INTERRUPTED.value and not abandoned(dictation):
        raise DictationError("state", f"dictation {dictation.id} is {dictation.status}, not interrupted")
    if dictation.created_by is not None and user_id != dictation.created_by and user_role not in others_roles:
        raise DictationError("forbidden", f"dictation {dictation.id} was started by another user: only its "
                                          "author may resume it")
    check_dictatable(dictation.study)
    speakers = list(dictation.part_speakers or [dictation.created_by])
    if same_part and dictation.audio_path is not None:
        if len(speakers) >= dictation.audio_parts and speakers[dictation.audio_parts - 1] != user_id:
            raise DictationError("forbidden", "only the person recording a part continues it; start a new part")
    else:
        if dictation.audio_path is not None:
            dictation.audio_parts += 1
        dictation.part_speakers = [*speakers[:dictation.audio_parts - 1],
                                   *[None] * max(0, dictation.audio_parts - 1 - len(speakers)), user_id]
    dictation.status = DictationStatus.RECORDING.value
    dictation.live_seen_at = utcnow()
    dictation.stream_session += 1
    return _queue(session, dictation, TRANSCRIBE_LIVE, max_attempts, {"session": dictation.stream_session})


def live_beat(*, session: Session, dictation_id: str, stream_session: int) -> bool:
    """The API still holds the socket of this connection: ``live_seen_at`` renewed. False when
    the dictation moved on (another connection resumed it, or it is no longer recording)."""
    result = session.execute(update(Dictation).where(
        Dictation.id == dictation_id, Dictation.stream_session == stream_session,
        Dictation.status == DictationStatus.RECORDING.value).values(live_seen_at=utcnow()))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def interrupt_abandoned(*, session: Session, dictation_id: str, stream_session: int) -> bool:
    """A worker's side: mark this connection's dictation interrupted if its API is gone (not seen
    for LIVE_STALE); True when it did."""
    result = session.execute(update(Dictation).where(
        Dictation.id == dictation_id, Dictation.stream_session == stream_session,
        Dictation.status == DictationStatus.RECORDING.value,
        or_(Dictation.live_seen_at.is_(None), Dictation.live_seen_at < utcnow() - LIVE_STALE))
        .values(status=DictationStatus.INTERRUPTED.value))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def set_live_format(*, session: Session, dictation_id: str, fmt: str) -> str:
    """Name the stored file once the first chunk said what it is; returns the current part's path."""
    dictation = session.get_one(Dictation, dictation_id)
    if dictation.audio_path is None:
        dictation.audio_path = f"audio/{dictation.id}.{fmt}"
        dictation.audio_format = fmt
    elif dictation.audio_format != fmt:
        raise DictationError("format", f"this dictation was recorded as {dictation.audio_format}, not {fmt}")
    session.commit()
    return part_path(dictation, dictation.audio_parts)


def set_live_status(*, session: Session, dictation_id: str, status: DictationStatus, audio_bytes: int | None = None,
                    reset: bool = False, stream_session: int | None = None) -> bool:
    """The API's side of a live dictation: recording -> finalizing / interrupted; a reset bumps the
    epoch. Only from ``recording`` (a dictation a worker already interrupted or failed is not
    moved on by a late "stop"), and with ``stream_session`` only while that connection is still
    the dictation's (a connection that drops after another resumed it changes nothing). False
    when nothing changed."""
    values: dict[str, object] = {"status": status.value}
    if audio_bytes is not None:
        values["audio_bytes"] = audio_bytes
    if reset:
        values.update(stream_epoch=Dictation.stream_epoch + 1, partial_seq=Dictation.partial_seq + 1,
                      partial_committed="", partial_text="")
    where = [Dictation.id == dictation_id, Dictation.status == DictationStatus.RECORDING.value]
    if stream_session is not None:
        where.append(Dictation.stream_session == stream_session)
    result = session.execute(update(Dictation).where(*where).values(**values))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def publish_partial(*, session: Session, dictation_id: str, epoch: int, committed: str, text: str) -> bool:
    """The worker's side: the latest partial text, for the API to relay. Only for the recording's
    current epoch: a pass that was running when the radiologist said "reset" publishes nothing
    (False), or the emptied text would come back."""
    result = session.execute(update(Dictation).where(Dictation.id == dictation_id, Dictation.stream_epoch == epoch)
                             .values(partial_committed=committed, partial_text=text,
                                     partial_seq=Dictation.partial_seq + 1))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class LiveState:
    status: str
    stream_session: int
    stream_epoch: int
    partial_seq: int
    partial_committed: str
    partial_text: str
    transcript: str
    error: str
    audio_path: str | None
    audio_format: str
    audio_parts: int
    live_seen_at: datetime | None = None


def live_state(*, session: Session, dictation_id: str) -> LiveState | None:
    row = session.execute(select(
        Dictation.status, Dictation.stream_session, Dictation.stream_epoch, Dictation.partial_seq,
        Dictation.partial_committed, Dictation.partial_text, Dictation.transcript, Dictation.error,
        Dictation.audio_path, Dictation.audio_format, Dictation.audio_parts, Dictation.live_seen_at,
    ).where(Dictation.id == dictation_id)).first()
    session.rollback()  # a poll: end the read transaction so the next one sees new commits
    return LiveState(*row) if row is not None else None
