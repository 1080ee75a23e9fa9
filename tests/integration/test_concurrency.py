"""Concurrent writers of one report, on SQLite and PostgreSQL: two steps interleaved at the exact
point (one writer holds the report's row while the other arrives), never by hoping threads collide.
What is signed is the text the signer saw; no dictation's text is lost to another's merge; a
loser gets 409 with a message, never a 500."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.dictation.models import Dictation, Section
from radservice.jobs.models import Job
from radservice.reports import service as reports
from radservice.reports.flows import DraftFlow
from radservice.reports.models import Report, ReportVersion, VersionKind
from radservice.users.models import User
from tests.integration.test_report_drafts import flow, run, transcribed  # noqa: F401 (fixture)
from tests.support import add_report, add_study, make_user

pytestmark = pytest.mark.integration
TEXT = {"findings": "Lungs: clear.", "impression": "No acute finding."}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(factory: sessionmaker[Session]) -> dict[str, dict[str, str]]:
    return {role: _auth(make_user(factory, f"c.{role}", role)) for role in ("radiologist", "resident")}


def _while_held(factory: sessionmaker[Session], report_id: int, step: Any, request: Any) -> Any:
    """Run ``request`` (an HTTP call) in a thread while another session holds the report's row
    and has done ``step`` on it; commit that step, then return the request's response."""
    holder = factory()
    answers: list[Any] = []
    try:
        report = reports.get(session=holder, report_id=report_id, for_update=True)
        assert report is not None
        step(holder, report)
        holder.flush()
        thread = threading.Thread(target=lambda: answers.append(request()))
        thread.start()
        time.sleep(0.5)  # the request is now waiting for the row (or the SQLite write lock)
        assert thread.is_alive(), "the request did not wait for the row the other writer holds"
        holder.commit()
    finally:
        holder.close()
    thread.join(30)
    assert answers, "the request did not finish"
    return answers[0]


def _signing(factory: sessionmaker[Session], username: str, kind: VersionKind, revision: int | None = None) -> Any:
    """The step of another session that signs the report as ``username`` (for _while_held)."""
    with factory() as session:
        signer = session.scalars(select(User).where(User.username == username)).one()

    def sign(session: Session, report: Report) -> None:
        reports.sign(session=session, report=report, kind=kind, user=signer, destinations=["ris"],
                     give_up_after=timedelta(hours=1), revision=revision)
    return sign


def test_an_edit_during_a_sign_is_refused_and_the_signed_text_is_what_was_read(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "RACE-1")
    report_id = add_report(factory, "RACE-1", TEXT)
    url = f"/api/v1/reports/{report_id}"
    seen = client.get(url, headers=people["radiologist"]).json()
    sign = _signing(factory, "c.radiologist", VersionKind.FINAL, seen["revision"])
    edit = _while_held(factory, report_id, sign, lambda: client.patch(
        url, json={"sections": {"impression": "Edited while signing."}, "revision": seen["revision"]},
        headers=people["radiologist"]))
    assert edit.status_code == 409, edit.text
    assert "final" in edit.json()["detail"]
    with factory() as session:
        report = session.get_one(Report, report_id)
        (version,) = session.scalars(select(ReportVersion).where(ReportVersion.report_id == report_id)).all()
        assert report.status == "final" and report.sections == version.sections
        assert version.sections["impression"] == seen["sections"]["impression"] == TEXT["impression"]


def test_a_sign_during_an_edit_is_stale_and_two_edits_of_one_revision_do_not_both_win(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "RACE-2")
    report_id = add_report(factory, "RACE-2", TEXT)
    url = f"/api/v1/reports/{report_id}"
    seen = client.get(url, headers=people["radiologist"]).json()

    def edit(session: Session, report: Report) -> None:
        reports.edit(session=session, report=report, sections={"impression": "Changed by a colleague."},
                     user_id=None, revision=seen["revision"])

    signed = _while_held(factory, report_id, edit, lambda: client.post(
        f"{url}/sign", json={"status": "final", "revision": seen["revision"]}, headers=people["radiologist"]))
    assert signed.status_code == 409 and "revision" in signed.json()["detail"], signed.text
    with factory() as session:
        assert session.scalars(select(ReportVersion)).all() == []  # nothing signed that nobody read
    # two editors from one revision: the first wins, the second is told to read again
    now = client.get(url, headers=people["radiologist"]).json()["revision"]
    first = client.patch(url, json={"sections": {"findings": "One."}, "revision": now}, headers=people["resident"])
    second = client.patch(url, json={"sections": {"findings": "Two."}, "revision": now},
                          headers=people["radiologist"])
    assert first.status_code == 200 and second.status_code == 409, (first.text, second.text)
    assert client.get(url, headers=people["radiologist"]).json()["sections"]["findings"] == "One."


def test_revision_is_required_to_edit_or_sign(client: TestClient, factory: sessionmaker[Session],
                                             people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "RACE-3")
    report_id = add_report(factory, "RACE-3", TEXT)
    url = f"/api/v1/reports/{report_id}"
    edit = client.patch(url, json={"sections": {"findings": "x"}}, headers=people["radiologist"])
    sign = client.post(f"{url}/sign", json={"status": "final"}, headers=people["radiologist"])
    assert edit.status_code == 422 and sign.status_code == 422, (edit.text, sign.text)
    assert all("revision" in str(r.json()["detail"]) for r in (edit, sign))
    assert client.get(url, headers=people["radiologist"]).json()["status"] == "draft"


def test_two_signers_at_once_one_signs_and_the_other_gets_409(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "RACE-4")
    report_id = add_report(factory, "RACE-4", TEXT)
    url = f"/api/v1/reports/{report_id}"
    seen = client.get(url, headers=people["radiologist"]).json()
    sign = _signing(factory, "c.resident", VersionKind.PRELIMINARY, seen["revision"])
    loser = _while_held(factory, report_id, sign, lambda: client.post(
        f"{url}/sign", json={"status": "final", "revision": seen["revision"]}, headers=people["radiologist"]))
    assert loser.status_code == 409, loser.text
    assert "revision" in loser.json()["detail"] and "Traceback" not in loser.text
    with factory() as session:
        kinds = [v.kind for v in session.scalars(select(ReportVersion).where(ReportVersion.report_id == report_id))]
        assert kinds == ["preliminary"]


def test_two_dictations_merged_at_once_both_stay(factory: sessionmaker[Session], tmp_path: Path,
                                                 flow: DraftFlow, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The findings job is between reading the report and writing it (asking the LLM) when the
    impression job runs whole: the findings job then merges into the report as the impression
    job left it. Without the row lock and revision check, one of the two texts was lost."""
    add_study(factory, "RACE-5", modality="CT", procedure="CT CHEST")
    findings = transcribed(factory, tmp_path, "RACE-5", Section.FINDINGS, "lungs colon clear period")
    impression = transcribed(factory, tmp_path, "RACE-5", Section.IMPRESSION, "no acute abnormality period")
    assert run(flow, factory, transcribed(factory, tmp_path, "RACE-5", Section.FINDINGS,
                                          "pleura colon no effusion period"))["merged"] is True
    original = DraftFlow._llm_step
    interleaved: list[dict[str, object]] = []

    def llm_step(self: DraftFlow, *args: Any, **kwargs: Any) -> Any:
        if not interleaved:
            interleaved.append({})
            interleaved[0] = run(flow, factory, impression)  # the other job, start to end, now
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DraftFlow, "_llm_step", llm_step)
    assert run(flow, factory, findings)["merged"] is True
    assert interleaved and interleaved[0]["merged"] is True
    with factory() as session:
        report = session.scalars(select(Report)).one()
        assert report.sections["impression"] == "No acute abnormality."
        assert report.sections["findings"] == "Pleura: No effusion.\nLungs: Clear."
        assert len(report.dictation_ids) == 3


@pytest.mark.parametrize("path", ["/api/v1/reports/1732008062614276364111446016",
                                  "/api/v1/reports/2147483648/deliveries", "/api/v1/jobs/99999999999999999999"])
def test_an_id_too_large_for_the_database_is_a_422_not_a_500(client: TestClient, path: str,
                                                              people: dict[str, dict[str, str]]) -> None:
    answer = client.get(path, headers=people["radiologist"])
    assert answer.status_code == 422 and "less than or equal" in answer.text, answer.text
    for sub in ("sign", "addenda"):
        posted = client.post(f"/api/v1/reports/1732008062614276364111446016/{sub}",
                             json={"status": "final", "revision": 1, "text": "x"}, headers=people["radiologist"])
        assert posted.status_code == 422, posted.text


def test_a_locked_database_is_a_503_with_retry_after(tmp_path: Path) -> None:
    """A SQLite write lock held past the busy timeout (another process's long transaction):
    503 with Retry-After, not a 500."""
    from radservice.api.app import create_app
    from radservice.config import Settings
    from radservice.db import migrate
    from radservice.db.session import make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{tmp_path}/locked.db")
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    headers = _auth(make_user(factory, "c.locked", "radiologist"))
    add_study(factory, "LOCK-1")
    report_id = add_report(factory, "LOCK-1", TEXT)
    settings = Settings(database={"url": str(engine.url)}, storage={"data_dir": tmp_path / "data"})
    with TestClient(create_app(settings, engine)) as client:
        revision = client.get(f"/api/v1/reports/{report_id}", headers=headers).json()["revision"]
        holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
            answer = client.patch(f"/api/v1/reports/{report_id}", json={"sections": {"findings": "x"},
                                                                       "revision": revision}, headers=headers)
        finally:
            holder.rollback()
            holder.close()
    engine.dispose()
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
    assert "retry" in answer.json()["detail"]


def test_transcribing_again_is_refused_while_the_dictation_is_still_recording(
        client: TestClient, factory: sessionmaker[Session], tmp_path: Path,
        people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "RACE-6", modality="CT", procedure="CT CHEST")
    dictation_id = transcribed(factory, tmp_path, "RACE-6", Section.FINDINGS, "lungs colon clear period")
    for status in ("recording", "finalizing"):
        with factory() as session:
            session.get_one(Dictation, dictation_id).status = status
            session.commit()
        refused = client.post(f"/api/v1/dictations/{dictation_id}/transcribe", headers=people["radiologist"])
        assert refused.status_code == 409 and status in refused.json()["detail"], refused.text
    with factory() as session:
        assert [j.kind for j in session.scalars(select(Job))] == ["transcribe"]  # only the upload's own job


def _in_background(call: Any) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


def test_reads_answer_while_another_process_holds_the_sqlite_write_lock(tmp_path: Path) -> None:
    """A read takes no write lock and does not wait for one: GET /me, the worklist, a study and
    its report answer while a writer holds the lock (before: every request began IMMEDIATE and
    waited, then failed; then the audit row of each read waited for the lock). The audit rows
    of those reads are written once the lock is free, none lost, in order, with the client."""
    from radservice.api.app import create_app
    from radservice.audit.models import AuditEvent
    from radservice.config import Settings
    from radservice.db import migrate
    from radservice.db.session import make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{tmp_path}/held.db")
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    headers = _auth(make_user(factory, "c.reader", "radiologist"))
    add_study(factory, "HELD-1")
    report_id = add_report(factory, "HELD-1", TEXT)
    settings = Settings(database={"url": str(engine.url)}, storage={"data_dir": tmp_path / "data"})
    with TestClient(create_app(settings, engine)) as client:
        holder = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            for path in ("/api/v1/me", "/api/v1/worklist", "/api/v1/studies/HELD-1", f"/api/v1/reports/{report_id}"):
                started = time.monotonic()
                answer = client.get(path, headers=headers)
                waited = time.monotonic() - started
                assert answer.status_code == 200 and waited < 2, (path, answer.text, waited)
                if path == "/api/v1/worklist":
                    assert [s["accession_number"] for s in answer.json()["items"]] == ["HELD-1"]
            time.sleep(0.6)  # the writer tries (and waits) meanwhile: nothing is written yet
            with make_sessionmaker(engine, reader=True)() as session:
                assert session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "c.reader")).all() == []
        finally:
            holder.rollback()
            holder.close()

        def written() -> list[tuple[str, str | None]]:
            with factory() as session:
                return [(e.action, e.client) for e in session.scalars(
                    select(AuditEvent).where(AuditEvent.actor == "c.reader").order_by(AuditEvent.id))]

        deadline = time.monotonic() + 15
        while len(written()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert written() == [("worklist.read", "testclient"), ("study.read", "testclient"),
                             ("report.read", "testclient")]
    engine.dispose()


def test_a_slow_llm_call_or_upload_holds_no_lock_for_other_writers(
        client: TestClient, factory: sessionmaker[Session], tmp_path: Path, people: dict[str, dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While suggest-impression waits for the LLM and while an upload is being decoded, an edit
    and a read of the same report go through (before, on SQLite, the slow request held the write
    lock from authentication on: the others waited 5 s and failed)."""
    from radservice.api.routes import dictations as dictation_routes
    from radservice.pipeline.refine.llm import LlmRefiner, Outcome
    from tests import audio_samples

    add_study(factory, "SLOW-1")
    report_id = add_report(factory, "SLOW-1", TEXT)
    url = f"/api/v1/reports/{report_id}"
    llm_waiting, release = threading.Event(), threading.Event()

    def slow_suggestion(self: LlmRefiner, findings: str) -> Outcome:
        llm_waiting.set()
        assert release.wait(20)
        return Outcome(text="", by_llm=False, reason="LLM off (test)", seconds=0.0, notes=[])

    monkeypatch.setattr(LlmRefiner, "suggest_impression", slow_suggestion)
    real_store = dictation_routes.store_upload
    decoding = threading.Event()

    def slow_store(*args: Any, **kwargs: Any) -> Any:
        decoding.set()
        assert release.wait(20)
        return real_store(*args, **kwargs)

    monkeypatch.setattr(dictation_routes, "store_upload", slow_store)
    suggestion, suggested = _in_background(lambda: client.post(f"{url}/suggest-impression",
                                                               headers=people["radiologist"]))
    upload, uploaded = _in_background(lambda: client.post(
        "/api/v1/studies/SLOW-1/dictations", headers=people["radiologist"], data={"section": "findings"},
        files={"audio": ("d.wav", audio_samples.tone(1.0), "audio/wav")}))
    try:
        assert llm_waiting.wait(10) and decoding.wait(10)
        started = time.monotonic()
        revision = client.get(url, headers=people["resident"]).json()["revision"]
        edited = client.patch(url, json={"sections": {"findings": "Edited meanwhile."}, "revision": revision},
                              headers=people["resident"])
        waited = time.monotonic() - started
        assert edited.status_code == 200 and waited < 3, (edited.text, waited)
        assert suggestion.is_alive() and upload.is_alive()
    finally:
        release.set()
        suggestion.join(20)
        upload.join(20)
    assert suggested[0].status_code == 200 and suggested[0].json()["reason"] == "LLM off (test)"
    assert uploaded[0].status_code == 202, uploaded[0].text


def test_two_first_dictations_create_one_report(factory: sessionmaker[Session], tmp_path: Path,
                                                flow: DraftFlow) -> None:  # noqa: F811
    """The first dictation's job is creating the study's report (not committed yet) when the
    second's starts: the second waits for the study and merges into that report (before, on
    PostgreSQL, it inserted a second report and failed on the unique key)."""
    from radservice.worklist.models import Study

    add_study(factory, "RACE-7", modality="CT", procedure="CT CHEST")
    first = transcribed(factory, tmp_path, "RACE-7", Section.FINDINGS, "lungs colon clear period")
    second = transcribed(factory, tmp_path, "RACE-7", Section.IMPRESSION, "no acute abnormality period")
    holder = factory()
    outcomes: list[Any] = []
    try:
        study = holder.scalars(select(Study).where(Study.accession_number == "RACE-7")).one()
        reports.draft_for(session=holder, study=study, template=flow.templates.pick(
            modality="CT", procedure_code="", procedure_text="CT CHEST"))
        holder.flush()

        def second_job() -> None:
            try:
                outcomes.append(run(flow, factory, second))
            except Exception as exc:  # the outcome under test
                outcomes.append(exc)

        thread = threading.Thread(target=second_job)
        thread.start()
        time.sleep(0.5)
        holder.commit()
    finally:
        holder.close()
    thread.join(30)
    assert outcomes and isinstance(outcomes[0], dict) and outcomes[0]["merged"] is True, outcomes
    assert run(flow, factory, first)["merged"] is True
    with factory() as session:
        (report,) = session.scalars(select(Report)).all()
        assert report.sections["impression"] == "No acute abnormality." and report.sections["findings"]


def test_an_hl7_cancel_during_a_signature_is_refused_not_applied_over_it(
        factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    """The RIS cancels the order while the radiologist's signature is committing: the cancel
    waits for the study and is refused (the RIS must not get an AA for a cancel while a final
    report goes out). Before, on PostgreSQL, it overwrote the study's status with cancelled."""
    from radservice.worklist.intake import OrderControl
    from radservice.worklist.models import Study

    add_study(factory, "RACE-8")
    report_id = add_report(factory, "RACE-8", TEXT)
    sign = _signing(factory, "c.radiologist", VersionKind.FINAL)
    holder = factory()
    outcomes: list[Any] = []
    try:
        report = reports.get(session=holder, report_id=report_id, for_update=True)
        assert report is not None
        sign(holder, report)
        holder.flush()

        def cancel() -> None:
            try:
                add_study(factory, "RACE-8", control=OrderControl.CANCEL)
                outcomes.append("applied")
            except Exception as exc:  # the outcome under test
                outcomes.append(type(exc).__name__)

        thread = threading.Thread(target=cancel)
        thread.start()
        time.sleep(0.5)
        holder.commit()
    finally:
        holder.close()
    thread.join(30)
    assert outcomes == ["StudyAlreadyReported"], outcomes
    with factory() as session:
        assert session.scalars(select(Study.status).where(Study.accession_number == "RACE-8")).one() == "final"
