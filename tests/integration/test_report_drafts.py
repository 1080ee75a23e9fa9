"""The draft_report job: a transcript refined and merged into the study's report, on SQLite and
PostgreSQL; edits through the service."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from integrations.ollama.client import OllamaModel
from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.dictation import service as dictations
from radservice.dictation.audio import store_upload
from radservice.dictation.models import Dictation, Section
from radservice.jobs.service import ClaimedJob
from radservice.jobs.worker import JobContext, PermanentJobError
from radservice.pipeline.compose import Templates
from radservice.pipeline.refine.macros import load_macros
from radservice.pipeline.vocabulary import load_vocabulary
from radservice.reports import service as reports
from radservice.reports.flows import DraftFlow
from radservice.reports.models import Report, ReportStatus
from radservice.worklist.models import Study
from tests import audio_samples
from tests.ollama_standin import Reply, ollama_standin
from tests.support import add_study

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def flow() -> DraftFlow:
    return DraftFlow(templates=Templates.load(REPO / "config" / "templates"),
                     vocabulary=load_vocabulary(REPO / "config" / "vocabulary"),
                     macros=load_macros(REPO / "config" / "macros.toml"))


def llm_flow(url: str) -> DraftFlow:
    return DraftFlow(templates=Templates.load(REPO / "config" / "templates"),
                     vocabulary=load_vocabulary(REPO / "config" / "vocabulary"),
                     macros=load_macros(REPO / "config" / "macros.toml"),
                     model=OllamaModel(url=url, model="llama3.2:3b", timeout_s=5))


def transcribed(factory: sessionmaker[Session], tmp_path: Path, accession: str, section: Section, text: str,
                probabilities: dict[int, float] | None = None) -> str:
    """A dictation of ``accession`` whose transcript is ``text`` (as the transcribe job leaves it),
    with its words when ``probabilities`` is given (0.5 s each, probability 0.95 unless it says otherwise)."""
    stored = store_upload(io.BytesIO(audio_samples.tone(1.0)), data_dir=tmp_path, max_bytes=1 << 24, max_seconds=60)
    with session_scope(factory) as session:
        study = session.scalars(select(Study).where(Study.accession_number == accession)).one()
        dictation, _ = dictations.add_dictation(session=session, study=study, section=section, audio=stored,
                                                user_id=None, max_attempts=3)
        dictation.transcript = text
        if probabilities is not None:  # else no words (as a dictation transcribed before words were kept)
            dictation.words = [{"word": f" {w}", "start": i * 0.5, "end": i * 0.5 + 0.4,
                                "probability": probabilities.get(i, 0.95)} for i, w in enumerate(text.split())]
        dictation.status = "transcribed"
        return dictation.id


def run(flow: DraftFlow, factory: sessionmaker[Session], dictation_id: str) -> dict[str, object]:
    job = ClaimedJob(1, "draft_report", {"dictation_id": dictation_id}, 1, 3, utcnow())
    return flow(JobContext(job=job, sessions=factory))


def test_first_dictation_creates_the_draft_from_the_template(factory: sessionmaker[Session], tmp_path: Path,
                                                              flow: DraftFlow) -> None:
    add_study(factory, "REP-1", modality="CT", procedure="CT CHEST W CONTRAST")
    dictation_id = transcribed(factory, tmp_path, "REP-1", Section.FINDINGS,
                               "Findings. There is a four millimeter nodule in the right upper lobe period. "
                               "Small plural diffusion period. New paragraph. Impression. "
                               "Four millimeter nodule period.")
    result = run(flow, factory, dictation_id)
    assert result["merged"] is True and result["sections"] == ["findings", "impression"]
    with factory() as session:
        report = session.scalars(select(Report)).one()
        assert report.template == "CT chest" and report.status == "draft" and report.revision == 2
        assert [k for k, _ in report.titles] == ["clinical_history", "technique", "comparison", "findings",
                                                 "impression"]
        assert report.sections["findings"] == ("There is a 4 mm nodule in the right upper lobe. "
                                                "Small pleural effusion.")
        assert report.sections["impression"] == "4 mm nodule."
        assert report.sections["technique"] == ""
        assert {"rule": "vocabulary", "before": "plural diffusion", "after": "pleural effusion",
                "dictation_id": dictation_id} in report.notes
        assert report.study.status == "dictated"


def test_second_dictation_is_merged_and_a_retry_merges_nothing_twice(
        factory: sessionmaker[Session], tmp_path: Path, flow: DraftFlow) -> None:
    add_study(factory, "REP-2", modality="CT", procedure="CT CHEST")
    first = transcribed(factory, tmp_path, "REP-2", Section.FINDINGS,
                        "lungs colon clear period pleura colon no effusion period")
    second = transcribed(factory, tmp_path, "REP-2", Section.FINDINGS,
                         "the heart is normal period lungs colon no nodule period")
    impression = transcribed(factory, tmp_path, "REP-2", Section.IMPRESSION, "no acute abnormality period")
    for dictation_id in (first, second, impression):
        assert run(flow, factory, dictation_id)["merged"] is True
    assert run(flow, factory, second)["merged"] is False  # the job ran again: nothing added twice
    with factory() as session:
        report = session.scalars(select(Report)).one()
        # an organ subheading's text goes after the same subheading; the rest is appended
        assert report.sections["findings"] == "Lungs: Clear. No nodule.\nPleura: No effusion. The heart is normal."
        assert report.sections["impression"] == "No acute abnormality."
        assert report.dictation_ids == [first, second, impression]


def test_unsure_and_contradicting_sides_are_flagged_on_the_report_and_never_changed(
        factory: sessionmaker[Session], tmp_path: Path, flow: DraftFlow) -> None:
    add_study(factory, "REP-F", modality="MR", procedure="MRI LEFT KNEE WITHOUT CONTRAST")
    text = ("Findings. Tear of the light medial meniscus period. Right knee effusion period. "
            "Pneumothorax is seen period.")
    # "Pneumothorax" starts a sentence with p 0.2: a "No" before it may have been lost
    dictation_id = transcribed(factory, tmp_path, "REP-F", Section.FINDINGS, text, {12: 0.2})
    assert run(flow, factory, dictation_id)["flags"] == 3
    with factory() as session:
        report = session.scalars(select(Report)).one()
        assert report.sections["findings"] == ("Tear of the light medial meniscus. Right knee effusion. "
                                                "Pneumothorax is seen.")  # flagged, not changed
        flags = [(n["before"], n["after"]) for n in report.notes if n["rule"] == "flag"]
        assert [word for word, _ in flags] == ["light", "Right", "Pneumothorax"]
        assert "misheard 'left' or 'right'" in flags[0][1] and "(at 2.0 s)" in flags[0][1]
        assert "the order is MRI LEFT KNEE" in flags[1][1] and "'no' may have been lost" in flags[2][1]


def test_signed_report_takes_no_dictation_and_the_job_says_why(factory: sessionmaker[Session], tmp_path: Path,
                                                                 flow: DraftFlow) -> None:
    add_study(factory, "REP-3", modality="CT", procedure="CT HEAD")
    run(flow, factory, transcribed(factory, tmp_path, "REP-3", Section.FINDINGS, "no hemorrhage period"))
    with session_scope(factory) as session:
        session.scalars(select(Report)).one().status = ReportStatus.FINAL.value
    late = transcribed(factory, tmp_path, "REP-3", Section.FINDINGS, "one more thing period")
    with pytest.raises(PermanentJobError, match="only a draft takes dictations"):
        run(flow, factory, late)
    with factory() as session:
        report = session.scalars(select(Report)).one()
        assert report.sections["findings"] == "No hemorrhage." and report.template == "default"
        # the dictation keeps its transcript: nothing is lost
        assert session.get_one(Dictation, late).transcript == "one more thing period"


def test_dictation_without_transcript_fails_for_good(factory: sessionmaker[Session], tmp_path: Path,
                                                     flow: DraftFlow) -> None:
    add_study(factory, "REP-4", modality="CT", procedure="CT HEAD")
    empty = transcribed(factory, tmp_path, "REP-4", Section.FINDINGS, "")
    with pytest.raises(PermanentJobError, match="no transcript"):
        run(flow, factory, empty)
    with pytest.raises(PermanentJobError, match="does not exist"):
        run(flow, factory, "no-such-dictation")


def test_edit_checks_status_revision_and_sections(factory: sessionmaker[Session], tmp_path: Path,
                                                  flow: DraftFlow) -> None:
    add_study(factory, "REP-5", modality="CT", procedure="CT HEAD")
    run(flow, factory, transcribed(factory, tmp_path, "REP-5", Section.FINDINGS, "no hemorrhage period"))
    with session_scope(factory) as session:
        report = session.scalars(select(Report)).one()
        with pytest.raises(reports.ReportError, match="not 1") as stale:
            reports.edit(session=session, report=report, sections={"findings": "x"}, user_id=None, revision=1)
        assert stale.value.kind == "stale"
        with pytest.raises(reports.ReportError, match="unknown section") as unknown:
            reports.edit(session=session, report=report, sections={"lungs": "x"}, user_id=None)
        assert unknown.value.kind == "invalid"
        reports.edit(session=session, report=report, sections={"findings": " Edited. "}, user_id=None, revision=2)
        assert (report.sections["findings"], report.revision) == ("Edited.", 3)
        report.status = ReportStatus.PRELIMINARY.value
        with pytest.raises(reports.ReportError, match="only a draft can be edited"):
            reports.edit(session=session, report=report, sections={"findings": "x"}, user_id=None)


def test_llm_merge_is_kept_when_the_guard_accepts_it(factory: sessionmaker[Session], tmp_path: Path) -> None:
    add_study(factory, "REP-LLM", modality="CT", procedure="CT CHEST")
    with ollama_standin() as standin:
        flow = llm_flow(standin.url)
        first = transcribed(factory, tmp_path, "REP-LLM", Section.FINDINGS,
                            "lungs colon four millimeter nodule in the right upper lobe period")
        assert run(flow, factory, first)["refinement"] == "rules"  # nothing to merge into yet
        merged = "Lungs: 4 mm nodule in the right upper lobe, no pneumothorax."
        standin.script.append(Reply("Sure, here is the merged text:\n" + merged))
        second = transcribed(factory, tmp_path, "REP-LLM", Section.FINDINGS, "no pneumothorax period")
        assert run(flow, factory, second)["refinement"] == "llm"
    with factory() as session:
        report = session.scalars(select(Report)).one()
        assert report.sections["findings"] == merged and report.refinement == "llm"
        assert {"dictation_id": second, "rule": "llm", "before": "Lungs: 4 mm nodule in the right upper lobe. "
                "No pneumothorax.", "after": merged} in report.notes


def test_harmful_llm_edit_and_unreachable_llm_leave_the_rules_text(factory: sessionmaker[Session],
                                                                    tmp_path: Path) -> None:
    add_study(factory, "REP-BAD", modality="CT", procedure="CT CHEST")
    with ollama_standin() as standin:
        flow = llm_flow(standin.url)
        run(flow, factory, transcribed(factory, tmp_path, "REP-BAD", Section.FINDINGS,
                                       "small right pleural effusion period"))
        standin.script.append(Reply("Small left pleural effusion. No pneumothorax."))
        result = run(flow, factory, transcribed(factory, tmp_path, "REP-BAD", Section.FINDINGS,
                                                "no pneumothorax period"))
        url = standin.url
    # the job's result (readable by any role) and the audit trail say what happened, not which findings
    assert result["refinement"] == "rules-only: merge findings"
    with factory() as session:
        from radservice.audit.models import AuditEvent
        details = [e.detail for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "report.drafted"))]
        assert details and all("laterality" not in str(d) and "left" not in str(d) for d in details)
    with factory() as session:
        report = session.scalars(select(Report)).one()
        assert report.sections["findings"] == "Small right pleural effusion. No pneumothorax."
        refused = [n for n in report.notes if n["rule"] == "llm refused by guard"]
        assert len(refused) == 1 and "laterality" in refused[0]["after"]
    # the stand-in is gone now: Ollama unreachable, the impression keeps the rules' text
    result = run(llm_flow(url), factory, transcribed(factory, tmp_path, "REP-BAD", Section.IMPRESSION,
                                                     "small right effusion period"))
    assert result["refinement"] == "rules-only: clean impression"  # the reason is on the report, for its readers
    with factory() as session:
        report = session.scalars(select(Report)).one()
        assert report.sections["impression"] == "Small right effusion."
        assert report.refinement.startswith("rules-only: clean impression: Ollama unreachable")


def test_suggested_impression_through_the_api(factory: sessionmaker[Session], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from radservice.api.app import create_app
    from radservice.config import Settings
    from tests.support import make_user

    add_study(factory, "REP-SUG", modality="CT", procedure="CT CHEST")
    rules_only = DraftFlow(templates=Templates.load(REPO / "config" / "templates"),
                           vocabulary=load_vocabulary(REPO / "config" / "vocabulary"), macros={})
    report_id = run(rules_only, factory, transcribed(factory, tmp_path, "REP-SUG", Section.FINDINGS,
                                                     "four millimeter nodule in the right upper lobe period "
                                                     "no pneumothorax period"))["report_id"]
    token = make_user(factory, "dr.sug", "radiologist")
    headers = {"Authorization": f"Bearer {token}"}
    with ollama_standin() as standin:
        settings = Settings(database={"url": factory.kw["bind"].url.render_as_string(hide_password=False)},
                            storage={"data_dir": tmp_path / "data"},
                            whisper={"vocabulary_dir": REPO / "config" / "vocabulary"},
                            llm={"url": standin.url, "prompts_dir": REPO / "config" / "prompts"})
        standin.script += [Reply("Impression: 4 mm right upper lobe nodule."), Reply("Right pneumothorax.")]
        with TestClient(create_app(settings, factory.kw["bind"])) as client:
            good = client.post(f"/api/v1/reports/{report_id}/suggest-impression", headers=headers)
            assert good.status_code == 200, good.text
            assert good.json()["suggestion"] == "4 mm right upper lobe nodule."  # the label is the section's
            assert good.json()["status"] == "suggestion" and good.json()["reason"] == ""
            bad = client.post(f"/api/v1/reports/{report_id}/suggest-impression", headers=headers).json()
            assert bad["suggestion"] is None and "the guard refused" in bad["reason"]
            # a suggestion never changes the report by itself
            assert client.get(f"/api/v1/reports/{report_id}", headers=headers).json()["sections"]["impression"] == ""
            assert client.post("/api/v1/reports/999999/suggest-impression", headers=headers).status_code == 404
    assert "impression" in standin.requests[0]["messages"][0]["content"].lower()
