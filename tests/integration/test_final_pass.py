"""The accurate pass after a live dictation: the live model's text goes into the draft at once;
the upload model's transcript of the whole recording replaces it when it is done, unless the
report changed first (then the live text stays, with a note). On SQLite and PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.dictation import service as dictations
from radservice.dictation.audio import store_upload
from radservice.dictation.flows import FinalTranscribeFlow, store_transcript
from radservice.dictation.models import Dictation, DictationStatus, FinalPass, Section
from radservice.jobs.models import Job
from radservice.jobs.service import ClaimedJob
from radservice.jobs.worker import JobContext
from radservice.pipeline.compose import Templates
from radservice.pipeline.refine.macros import load_macros
from radservice.pipeline.transcribe import NoSpeech, Transcript, Word
from radservice.pipeline.vocabulary import load_vocabulary
from radservice.reports import service as reports
from radservice.reports.flows import DraftFlow
from radservice.reports.models import Report, ReportStatus
from radservice.worklist.models import Study
from tests import audio_samples
from tests.support import add_study

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
LIVE = "Findings. There is a small light pleural effusion period. No pneumothorax period."
ACCURATE = "Findings. There is a small left pleural effusion period. No pneumothorax period."


class Accurate:
    """The upload model: a fixed transcript (or no speech), counting its calls."""

    name = "accurate-stand-in"

    def __init__(self, text: str = ACCURATE) -> None:
        self.text = text
        self.calls = 0

    def transcribe(self, audio: Any, *, prompt: str = "", hotwords: str = "",
                   beam_size: int | None = None) -> Transcript:
        self.calls += 1
        if not self.text:
            raise NoSpeech("no speech detected")
        words = [Word(f" {w}", i * 0.4, i * 0.4 + 0.3, 0.97) for i, w in enumerate(self.text.split())]
        return Transcript(text=self.text, words=words, duration_s=8.0, model=self.name)


@pytest.fixture
def drafts() -> DraftFlow:
    return DraftFlow(templates=Templates.load(REPO / "config" / "templates"),
                     vocabulary=load_vocabulary(REPO / "config" / "vocabulary"),
                     macros=load_macros(REPO / "config" / "macros.toml"))


def ctx(factory: sessionmaker[Session], kind: str, payload: dict[str, Any]) -> JobContext:
    return JobContext(job=ClaimedJob(1, kind, payload, 1, 3, utcnow()), sessions=factory)


def report_revision(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalars(select(Report.revision)).one()


def live_dictation(factory: sessionmaker[Session], tmp_path: Path, accession: str) -> str:
    """A live dictation just stopped: its audio stored, the live model's transcript kept as the
    live flow keeps it (with the draft and the accurate pass queued)."""
    add_study(factory, accession, modality="CT", procedure="CT CHEST")
    stored = store_upload(io.BytesIO(audio_samples.tone(1.0)), data_dir=tmp_path, max_bytes=1 << 24, max_seconds=60)
    with session_scope(factory) as session:
        study = session.scalars(select(Study).where(Study.accession_number == accession)).one()
        dictation, _ = dictations.add_dictation(session=session, study=study, section=Section.FINDINGS,
                                                audio=stored, user_id=None, max_attempts=3)
        dictation_id = dictation.id
    words = [Word(f" {w}", i * 0.4, i * 0.4 + 0.3, 0.9) for i, w in enumerate(LIVE.split())]
    result = store_transcript(ctx(factory, "transcribe_live", {"dictation_id": dictation_id}), dictation_id,
                              Transcript(text=LIVE, words=words, duration_s=8.0, model="live-stand-in"),
                              final_pass=True)
    assert result["final_job_id"] and result["draft_job_id"]
    return dictation_id


def queued(factory: sessionmaker[Session], kind: str) -> list[dict[str, Any]]:
    with factory() as session:
        return [dict(j.payload) for j in session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id))]


def report_of(factory: sessionmaker[Session]) -> tuple[dict[str, str], list[dict[str, Any]], int]:
    with factory() as session:
        report = session.scalars(select(Report)).one()
        return dict(report.sections), list(report.notes), report.revision


def dictation_of(factory: sessionmaker[Session], dictation_id: str) -> Dictation:
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        session.expunge(dictation)
        return dictation


def test_the_accurate_text_replaces_the_live_text_in_an_unchanged_draft(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow) -> None:
    dictation_id = live_dictation(factory, tmp_path, "FP-1")
    assert queued(factory, "transcribe_final") == [{"dictation_id": dictation_id}]
    drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id}))
    sections, notes, revision = report_of(factory)
    assert sections["findings"] == "There is a small light pleural effusion. No pneumothorax."
    assert dictation_of(factory, dictation_id).final_pass == FinalPass.PENDING.value

    accurate = Accurate()
    result = FinalTranscribeFlow(transcriber=accurate, data_dir=tmp_path, vocabulary=[])(
        ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    assert accurate.calls == 1 and result["text"] == ACCURATE
    dictation = dictation_of(factory, dictation_id)
    assert (dictation.transcript, dictation.interim_transcript) == (ACCURATE, LIVE)
    assert dictation.transcript_model == "accurate-stand-in" and dictation.status == DictationStatus.TRANSCRIBED.value
    assert queued(factory, "draft_report")[-1] == {"dictation_id": dictation_id, "final": True}

    outcome = drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id, "final": True}))
    assert outcome["final_pass"] == FinalPass.APPLIED.value
    sections, new_notes, new_revision = report_of(factory)
    assert sections["findings"] == "There is a small left pleural effusion. No pneumothorax."
    assert new_revision == revision + 1
    # the live text's notes went with it (its flag for 'light' too): each mark is noted once, not twice
    assert [n["rule"] for n in notes] == ["section", "spoken punctuation", "spoken punctuation", "flag"]
    assert [n["rule"] for n in new_notes] == ["section", "spoken punctuation", "spoken punctuation"]
    assert dictation_of(factory, dictation_id).final_pass == FinalPass.APPLIED.value

    # the report before this dictation stays with the revision it left, so that a transcription
    # again can still replace the text (and nothing else) while nobody changes the report
    after = dictation_of(factory, dictation_id)
    assert after.draft_before is not None and after.draft_revision == report_revision(factory)

    # the same job again (a retry after a crash), even after an edit, changes nothing more
    with session_scope(factory) as session:
        reports.edit(session=session, report=session.scalars(select(Report)).one(),
                     sections={"impression": "Small left effusion."}, user_id=None)
    edited = report_of(factory)
    again = drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id, "final": True}))
    assert again["final_pass"] == FinalPass.APPLIED.value and report_of(factory) == edited
    assert dictation_of(factory, dictation_id).final_pass == FinalPass.APPLIED.value


def test_a_retried_accurate_pass_keeps_the_live_text_and_queues_one_draft(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow) -> None:
    dictation_id = live_dictation(factory, tmp_path, "FP-7")
    accurate = Accurate()
    flow = FinalTranscribeFlow(transcriber=accurate, data_dir=tmp_path, vocabulary=[])
    flow(ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    # killed after its store committed, before the job was marked done: the job runs again
    assert flow(ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))["skipped"] == "pending"
    assert accurate.calls == 1
    dictation = dictation_of(factory, dictation_id)
    assert (dictation.transcript, dictation.interim_transcript) == (ACCURATE, LIVE)
    assert sum(1 for p in queued(factory, "draft_report") if p.get("final")) == 1


def test_an_edit_before_the_accurate_pass_wins_and_the_live_text_stays(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow) -> None:
    dictation_id = live_dictation(factory, tmp_path, "FP-2")
    drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id}))
    with session_scope(factory) as session:
        report = session.scalars(select(Report)).one()
        reports.edit(session=session, report=report, sections={"impression": "Small effusion."}, user_id=None)
    FinalTranscribeFlow(transcriber=Accurate(), data_dir=tmp_path, vocabulary=[])(
        ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    before, _, revision = report_of(factory)
    outcome = drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id, "final": True}))
    assert outcome["final_pass"] == FinalPass.KEPT.value
    sections, notes, new_revision = report_of(factory)
    assert sections == before and new_revision == revision  # the radiologist's text is untouched
    assert notes[-1]["rule"] == "final pass" and "changed before" in notes[-1]["before"]
    dictation = dictation_of(factory, dictation_id)
    assert (dictation.final_pass, dictation.transcript) == (FinalPass.KEPT.value, ACCURATE)


def test_an_accurate_pass_done_before_the_live_draft_goes_straight_into_the_report(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow) -> None:
    dictation_id = live_dictation(factory, tmp_path, "FP-3")
    FinalTranscribeFlow(transcriber=Accurate(), data_dir=tmp_path, vocabulary=[])(
        ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id}))  # the live draft job, late
    drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id, "final": True}))
    sections, notes, _ = report_of(factory)
    assert sections["findings"] == "There is a small left pleural effusion. No pneumothorax."
    assert sum(1 for n in notes if n["rule"] == "section") == 1  # merged once
    assert dictation_of(factory, dictation_id).final_pass == FinalPass.APPLIED.value


def test_a_report_signed_before_the_accurate_pass_keeps_what_was_signed(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow) -> None:
    dictation_id = live_dictation(factory, tmp_path, "FP-4")
    drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id}))
    with session_scope(factory) as session:
        session.scalars(select(Report)).one().status = ReportStatus.FINAL.value
    FinalTranscribeFlow(transcriber=Accurate(), data_dir=tmp_path, vocabulary=[])(
        ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    outcome = drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id, "final": True}))
    assert outcome["final_pass"] == FinalPass.KEPT.value
    assert report_of(factory)[0]["findings"] == "There is a small light pleural effusion. No pneumothorax."


@pytest.mark.parametrize("problem", ["no speech", "audio purged"])
def test_a_failed_accurate_pass_leaves_the_live_text_and_says_why(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow, problem: str) -> None:
    dictation_id = live_dictation(factory, tmp_path, "FP-5")
    drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id}))
    if problem == "audio purged":
        with session_scope(factory) as session:
            session.get_one(Dictation, dictation_id).audio_path = None
    accurate = Accurate(text="")
    result = FinalTranscribeFlow(transcriber=accurate, data_dir=tmp_path, vocabulary=[])(
        ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    assert result["final_pass"] == FinalPass.FAILED.value
    dictation = dictation_of(factory, dictation_id)
    assert (dictation.final_pass, dictation.status, dictation.transcript) == (
        FinalPass.FAILED.value, DictationStatus.TRANSCRIBED.value, LIVE)
    assert dictation.error == ("the accurate pass heard no speech" if problem == "no speech"
                               else "the audio is no longer stored (retention period)")
    assert accurate.calls == (1 if problem == "no speech" else 0)
    assert len(queued(factory, "draft_report")) == 1  # no second draft
    assert report_of(factory)[0]["findings"] == "There is a small light pleural effusion. No pneumothorax."


def test_an_upload_queues_no_accurate_pass(factory: sessionmaker[Session], tmp_path: Path) -> None:
    dictation_id = live_dictation(factory, tmp_path, "FP-6")
    assert len(queued(factory, "transcribe_final")) == 1
    # transcribed again as an upload (POST .../transcribe): the upload model's text, no pass queued
    result = store_transcript(ctx(factory, "transcribe", {"dictation_id": dictation_id}), dictation_id,
                              Transcript(text=ACCURATE, words=[], duration_s=8.0, model="upload"))
    assert "final_job_id" not in result and len(queued(factory, "transcribe_final")) == 1
    assert dictation_of(factory, dictation_id).final_pass == FinalPass.NONE.value
    # the pass queued for the live text finds nothing to do
    result = FinalTranscribeFlow(transcriber=Accurate(), data_dir=tmp_path, vocabulary=[])(
        ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    assert result == {"dictation_id": dictation_id, "skipped": FinalPass.NONE.value}


def test_an_edit_in_flight_is_never_overwritten_by_the_accurate_text(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow) -> None:
    """The radiologist's edit holds the report row while the final draft job starts: the job waits
    for it, then sees the new revision and keeps the report as edited (without the row lock, on
    PostgreSQL, it read the old revision and wrote the accurate text over the edit)."""
    import threading
    import time

    dictation_id = live_dictation(factory, tmp_path, "FP-8")
    drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id}))
    FinalTranscribeFlow(transcriber=Accurate(), data_dir=tmp_path, vocabulary=[])(
        ctx(factory, "transcribe_final", {"dictation_id": dictation_id}))
    editing = factory()
    try:
        report = reports.get(session=editing, report_id=editing.scalars(select(Report.id)).one(), for_update=True)
        assert report is not None
        reports.edit(session=editing, report=report, sections={"findings": "Edited by the radiologist."},
                     user_id=None)
        editing.flush()
        outcomes: list[dict[str, Any]] = []
        job = threading.Thread(target=lambda: outcomes.append(
            drafts(ctx(factory, "draft_report", {"dictation_id": dictation_id, "final": True}))))
        job.start()
        time.sleep(0.5)
        editing.commit()
    finally:
        editing.close()
    job.join(30)
    assert outcomes and outcomes[0]["final_pass"] == FinalPass.KEPT.value
    assert report_of(factory)[0]["findings"] == "Edited by the radiologist."


def test_an_upload_transcribed_again_replaces_its_own_text_in_the_draft(
        factory: sessionmaker[Session], tmp_path: Path, drafts: DraftFlow) -> None:
    """POST .../transcribe after the text went into the report: the new transcript takes the old
    one's place (before, the draft job saw the dictation merged already and skipped it). After
    an edit, the radiologist's text wins and a note says so."""
    from radservice.dictation.flows import store_transcript as store

    add_study(factory, "FP-9", modality="CT", procedure="CT CHEST")
    stored = store_upload(io.BytesIO(audio_samples.tone(1.0)), data_dir=tmp_path, max_bytes=1 << 24, max_seconds=60)
    with session_scope(factory) as session:
        study = session.scalars(select(Study).where(Study.accession_number == "FP-9")).one()
        dictation, _ = dictations.add_dictation(session=session, study=study, section=Section.FINDINGS,
                                                audio=stored, user_id=None, max_attempts=3)
        dictation_id = dictation.id
    for text, edited in ((LIVE, False), (ACCURATE, False), ("Findings. No effusion period.", True)):
        result = store(ctx(factory, "transcribe", {"dictation_id": dictation_id}), dictation_id,
                       Transcript(text=text, words=[], duration_s=8.0, model="upload"))
        draft = queued(factory, "draft_report")[-1]
        assert draft == ({"dictation_id": dictation_id} if text == LIVE else {"dictation_id": dictation_id,
                                                                               "final": True})
        assert "final_job_id" not in result
        if edited:
            with session_scope(factory) as session:
                report = session.scalars(select(Report)).one()
                reports.edit(session=session, report=report, sections={"impression": "Edited."}, user_id=None)
        drafts(ctx(factory, "draft_report", draft))
    sections, notes, _ = report_of(factory)
    # the second transcript replaced the first (not appended); the third came after an edit: kept
    assert sections["findings"] == "There is a small left pleural effusion. No pneumothorax."
    assert any(n["rule"] == "final pass" for n in notes)
    again = dictation_of(factory, dictation_id)
    assert again.final_pass == FinalPass.KEPT.value and again.transcript == "Findings. No effusion period."
