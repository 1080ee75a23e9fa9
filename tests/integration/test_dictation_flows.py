"""The transcribe job's handler and the audio retention duty, with a scripted transcriber."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.dictation import service as dictations
from radservice.dictation.audio import store_upload
from radservice.dictation.flows import TranscribeFlow
from radservice.dictation.models import Dictation, DictationStatus, Section
from radservice.jobs.models import Job
from radservice.jobs.service import ClaimedJob
from radservice.jobs.worker import JobContext, PermanentJobError
from radservice.pipeline.transcribe import Audio, NoSpeech, Transcript, Word
from radservice.pipeline.vocabulary import TermList
from radservice.worklist.models import Study
from tests import audio_samples
from tests.support import add_study

pytestmark = pytest.mark.integration


class BrokenTranscriber:
    name = "broken"

    def transcribe(self, audio: Audio, *, prompt: str = "", hotwords: str = "",
                   beam_size: int | None = None) -> Transcript:
        raise RuntimeError("decoder crashed")


class ScriptedTranscriber:
    """Answers from a list; records the prompts it was given."""

    name = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def transcribe(self, audio: Audio, *, prompt: str = "", hotwords: str = "",
                   beam_size: int | None = None) -> Transcript:
        assert not isinstance(audio, Path) and audio.size == 3 * 16_000  # the 3 s tone, decoded
        self.prompts.append(prompt)
        text = self.answers.pop(0)
        if not text:
            raise NoSpeech("no speech detected")
        words = [Word(w, i * 0.5, i * 0.5 + 0.4, 0.9) for i, w in enumerate(text.split())]
        return Transcript(text=text, words=words, duration_s=3.0, model="scripted")


def _dictation(factory: sessionmaker[Session], data_dir: Path) -> tuple[str, int]:
    add_study(factory, "ACC-F", modality="CT", procedure="CT CHEST")
    stored = store_upload(io.BytesIO(audio_samples.tone(3.0)), data_dir=data_dir, max_bytes=1 << 24, max_seconds=60)
    with session_scope(factory) as session:
        study = session.scalars(select(Study).where(Study.accession_number == "ACC-F")).one()
        dictation, job = dictations.add_dictation(session=session, study=study, section=Section.FINDINGS,
                                                  audio=stored, user_id=None, max_attempts=3)
        return dictation.id, job.id


def _ctx(factory: sessionmaker[Session], dictation_id: str, job_id: int, attempt: int = 1) -> JobContext:
    job = ClaimedJob(job_id, "transcribe", {"dictation_id": dictation_id}, attempt, 3, utcnow())
    return JobContext(job=job, sessions=factory)


def test_retried_transcription_replaces_the_transcript(factory: sessionmaker[Session], tmp_path: Path) -> None:
    dictation_id, job_id = _dictation(factory, tmp_path)
    transcriber = ScriptedTranscriber("first try text", "no pleural effusion")
    vocabulary = [TermList("chest", frozenset({"chest"}), ("pleural effusion",))]
    flow = TranscribeFlow(transcriber=transcriber, data_dir=tmp_path, vocabulary=vocabulary)
    flow(_ctx(factory, dictation_id, job_id))
    result = flow(_ctx(factory, dictation_id, job_id, attempt=2))
    draft_job_id = result.pop("draft_job_id")
    assert result == {"dictation_id": dictation_id, "text": "no pleural effusion", "model": "scripted",
                      "duration_s": 3.0}
    with factory() as session:
        # each stored transcript queues the report draft (merging is idempotent per dictation)
        drafts = session.scalars(select(Job).where(Job.kind == "draft_report").order_by(Job.id)).all()
        assert [j.payload for j in drafts] == [{"dictation_id": dictation_id}] * 2
        assert drafts[-1].id == draft_job_id
    assert transcriber.prompts == ["CT chest. Findings: pleural effusion."] * 2
    with factory() as session:
        (dictation,) = session.scalars(select(Dictation)).all()
        assert (dictation.status, dictation.transcript) == ("transcribed", "no pleural effusion")
        assert dictation.words is not None and [w["word"] for w in dictation.words] == ["no", "pleural", "effusion"]
        assert dictation.words[0] == {"word": "no", "start": 0.0, "end": 0.4, "probability": 0.9}


def test_no_speech_fails_the_dictation_without_retry(factory: sessionmaker[Session], tmp_path: Path) -> None:
    dictation_id, job_id = _dictation(factory, tmp_path)
    flow = TranscribeFlow(transcriber=ScriptedTranscriber(""), data_dir=tmp_path, vocabulary=[])
    with pytest.raises(PermanentJobError, match="no speech detected"):
        flow(_ctx(factory, dictation_id, job_id))
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        assert (dictation.status, dictation.error, dictation.transcript) == ("failed", "no speech detected", "")


def test_retention_removes_old_audio_and_keeps_the_transcript(factory: sessionmaker[Session], tmp_path: Path) -> None:
    dictation_id, job_id = _dictation(factory, tmp_path)
    TranscribeFlow(transcriber=ScriptedTranscriber("kept text"), data_dir=tmp_path,
                   vocabulary=[])(_ctx(factory, dictation_id, job_id))
    with factory() as session:
        audio = tmp_path / str(session.get_one(Dictation, dictation_id).audio_path)
    assert audio.is_file()
    with factory() as session:
        assert dictations.purge_audio(session=session, data_dir=tmp_path, older_than=timedelta(days=1)) == 0
        assert dictations.purge_audio(session=session, data_dir=tmp_path, older_than=timedelta(days=1),
                                      now=utcnow() + timedelta(days=2)) == 1
    assert not audio.exists()
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        assert (dictation.audio_path, dictation.transcript) == (None, "kept text")
    with pytest.raises(PermanentJobError, match="no longer stored"):
        TranscribeFlow(transcriber=ScriptedTranscriber("x"), data_dir=tmp_path,
                       vocabulary=[])(_ctx(factory, dictation_id, job_id))


def test_dictation_shows_failure_after_the_last_attempt(factory: sessionmaker[Session], tmp_path: Path) -> None:
    dictation_id, job_id = _dictation(factory, tmp_path)
    flow = TranscribeFlow(transcriber=BrokenTranscriber(), data_dir=tmp_path, vocabulary=[])
    with pytest.raises(RuntimeError):
        flow(_ctx(factory, dictation_id, job_id, attempt=2))
    with factory() as session:
        assert session.get_one(Dictation, dictation_id).status == "transcribing"  # a retry is coming
    with pytest.raises(RuntimeError):
        flow(_ctx(factory, dictation_id, job_id, attempt=3))
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        assert (dictation.status, dictation.error) == ("failed", "transcription failed: RuntimeError")


def test_a_partial_from_before_a_reset_is_not_published(factory: sessionmaker[Session], tmp_path: Path) -> None:
    dictation_id, _ = _dictation(factory, tmp_path)
    with session_scope(factory) as session:
        session.get_one(Dictation, dictation_id).status = DictationStatus.RECORDING.value  # as a live one
        session.flush()
        assert dictations.publish_partial(session=session, dictation_id=dictation_id, epoch=0,
                                          committed="no effusion", text="no effusion or")
        dictations.set_live_status(session=session, dictation_id=dictation_id,
                                   status=DictationStatus.RECORDING, reset=True)
        # the worker's pass that was running when "reset" came finishes now, for epoch 0
        assert not dictations.publish_partial(session=session, dictation_id=dictation_id, epoch=0,
                                              committed="no effusion or pneumothorax", text="no effusion or pneum")
        state = dictations.live_state(session=session, dictation_id=dictation_id)
        assert state is not None and (state.stream_epoch, state.partial_text, state.partial_committed) == (1, "", "")
        assert dictations.publish_partial(session=session, dictation_id=dictation_id, epoch=1,
                                          committed="", text="the heart")
        state = dictations.live_state(session=session, dictation_id=dictation_id)
        assert state is not None and state.partial_text == "the heart"


def test_retention_removes_every_part_and_the_sweep_removes_old_orphans(factory: sessionmaker[Session],
                                                                        tmp_path: Path) -> None:
    import os

    dictation_id, _ = _dictation(factory, tmp_path)
    with session_scope(factory) as session:
        dictation = session.get_one(Dictation, dictation_id)
        dictation.audio_parts = 3  # a live dictation resumed twice
        parts = dictations.audio_parts(dictation, tmp_path)
    for part in parts[1:]:
        part.write_bytes(b"more audio")
    folder = tmp_path / "audio"
    leftover, orphan, fresh = folder / ".crashed.part", folder / "orphan.wav", folder / "arriving.wav"
    for path in (leftover, orphan, fresh):
        path.write_bytes(b"x")
    old = (utcnow() - timedelta(days=2)).timestamp()
    for path in (leftover, orphan, *parts):
        os.utime(path, (old, old))
    with factory() as session:
        # the sweep keeps what a dictation names and what may still be on its way in
        assert dictations.sweep_orphan_audio(session=session, data_dir=tmp_path) == 2
    assert not leftover.exists() and not orphan.exists() and fresh.exists() and all(p.exists() for p in parts)
    with factory() as session:
        assert dictations.purge_audio(session=session, data_dir=tmp_path, older_than=timedelta(days=1),
                                      now=utcnow() + timedelta(days=2)) == 3
    assert not any(p.exists() for p in parts)
