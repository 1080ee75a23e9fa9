"""Reports: read one, edit a draft's sections, sign, add addenda, follow the deliveries.
Every read of report text is audited."""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from integrations.ollama.client import make_model
from radservice.api.deps import (
    CurrentUser,
    ReadAuditDep,
    RowId,
    SessionDep,
    SettingsDep,
    require_role,
    study_or_404,
    templates,
)
from radservice.audit import service as audit
from radservice.config import Settings
from radservice.db.session import begin_write
from radservice.outbox import service as outbox
from radservice.outbox.models import Destination
from radservice.outbox.schemas import DeliveryPublic
from radservice.pipeline.refine.guard import Guard
from radservice.pipeline.refine.llm import LlmRefiner, Prompts
from radservice.pipeline.vocabulary import TermList, load_vocabulary, study_terms
from radservice.reports import service as reports
from radservice.reports.models import Report, VersionKind
from radservice.reports.schemas import AddendumRequest, ImpressionSuggestion, ReportEdit, ReportPublic, SignRequest
from radservice.users.models import Role, User
from radservice.worklist.models import StudyStatus

router = APIRouter(prefix="/api/v1", tags=["reports"])

Editor = Annotated[User, Depends(require_role(Role.RADIOLOGIST, Role.RESIDENT, Role.EDITOR))]
Signer = Annotated[User, Depends(require_role(Role.RADIOLOGIST, Role.RESIDENT))]

_CODES = {"not_draft": status.HTTP_409_CONFLICT, "stale": status.HTTP_409_CONFLICT, "state": status.HTTP_409_CONFLICT,
          "invalid": status.HTTP_422_UNPROCESSABLE_CONTENT, "forbidden": status.HTTP_403_FORBIDDEN}


def _destinations(settings: Settings) -> list[str]:
    """Where every signed version goes: the RIS and the PACS (a row waits, visibly, while its
    peer's host is unset)."""
    return [Destination.RIS.value, Destination.PACS.value]


def _give_up_after(settings: Settings) -> timedelta:
    return timedelta(hours=settings.outbox.give_up_after_h)


def _wake_senders(request: Request) -> None:
    """Tell the senders in this process that rows are due (others find them at their next poll)."""
    request.app.state.outbox_wake()


@functools.cache
def _vocabulary(folder: Path) -> list[TermList]:
    """The term lists, read once per API process (as a worker reads them once)."""
    return load_vocabulary(folder)


def _report_or_404(session: SessionDep, report_id: int, *, for_update: bool = False) -> Report:
    report = reports.get(session=session, report_id=report_id, for_update=for_update)
    if report is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no report {report_id}")
    return report


def _public(session: SessionDep, report: Report) -> ReportPublic:
    """The report as the API shows it: versions, and the warnings its deliveries left."""
    warnings = [d.last_error for d in outbox.for_report(session=session, report_id=report.id)
                if d.last_error.startswith("warning:")]
    return ReportPublic.of(report, reports.versions(session=session, report_id=report.id),
                           list(dict.fromkeys(warnings)))


@router.get("/reports/{report_id}", response_model=ReportPublic)
def get_report(report_id: RowId, user: CurrentUser, session: SessionDep, read_audit: ReadAuditDep) -> ReportPublic:
    """The report's sections, status, version and revision, and the refinement notes."""
    report = _report_or_404(session, report_id)
    public = _public(session, report)
    read_audit(actor=user.username, user_id=user.id, action="report.read",
               entity_type="report", entity_id=str(report.id))
    return public


@router.post("/studies/{accession}/report", response_model=ReportPublic,
             responses={200: {"description": "the study's report already existed: it is returned"},
                        201: {"description": "the draft was made from the study's template"}})
def draft_report(accession: str, user: Editor, session: SessionDep, settings: SettingsDep, response: Response,
                 issuer: Annotated[str | None, Query(description="accession issuer, when the number is not "
                                                                    "unique")] = None) -> ReportPublic:
    """The study's draft report, made from its template when it has none yet (201), so that a
    report can be typed without dictating; the existing report otherwise (200, idempotent)."""
    begin_write(session)
    study = study_or_404(session, accession, issuer)
    if study.status == StudyStatus.CANCELLED.value:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"study {study.accession_number} is cancelled")
    template = templates(settings).pick(
        modality=study.modality, procedure_code=study.procedure_code, procedure_text=study.procedure_text)
    report, created = reports.draft_for(session=session, study=study, template=template)
    if not created:  # made before, or by a request that got the study's lock first
        session.commit()
        response.status_code = status.HTTP_200_OK
        return _public(session, report)
    audit.record(session=session, actor=user.username, user_id=user.id, action="report.created",
                 entity_type="report", entity_id=str(report.id),
                 detail={"accession": study.accession_number, "template": template.name})
    session.commit()
    response.status_code = status.HTTP_201_CREATED
    return _public(session, report)


@router.patch("/reports/{report_id}", response_model=ReportPublic)
def edit_report(report_id: RowId, body: ReportEdit, user: Editor, session: SessionDep) -> ReportPublic:
    """Replace the text of some sections of a draft; 409 once signed or when ``revision`` is stale."""
    begin_write(session)
    report = _report_or_404(session, report_id, for_update=True)
    try:
        reports.edit(session=session, report=report, sections=body.sections, user_id=user.id,
                     revision=body.revision)
    except reports.ReportError as exc:
        raise HTTPException(_CODES[exc.kind], detail=str(exc)) from None
    audit.record(session=session, actor=user.username, user_id=user.id, action="report.edited",
                 entity_type="report", entity_id=str(report.id),
                 detail={"sections": sorted(body.sections), "revision": report.revision})
    session.commit()
    session.refresh(report)
    return _public(session, report)


@router.post("/reports/{report_id}/sign", response_model=ReportPublic)
def sign_report(report_id: RowId, body: SignRequest, user: Signer, session: SessionDep, settings: SettingsDep,
                request: Request) -> ReportPublic:
    """Sign the report's text as a preliminary (radiologist or resident) or final (radiologist)
    version. The version is immutable; its deliveries are queued in the same transaction.
    403 for a role that may not sign it, 409 when the report is already final or ``revision`` is stale."""
    begin_write(session)
    report = _report_or_404(session, report_id, for_update=True)
    try:
        version = reports.sign(session=session, report=report, kind=VersionKind(body.status), user=user,
                               destinations=_destinations(settings), give_up_after=_give_up_after(settings),
                               revision=body.revision)
    except reports.ReportError as exc:
        raise HTTPException(_CODES[exc.kind], detail=str(exc)) from None
    audit.record(session=session, actor=user.username, user_id=user.id, action=f"report.signed_{body.status}",
                 entity_type="report", entity_id=str(report.id),
                 detail={"accession": report.study.accession_number, "version": version.version})
    session.commit()
    _wake_senders(request)
    return _public(session, report)


@router.post("/reports/{report_id}/addenda", response_model=ReportPublic, status_code=status.HTTP_201_CREATED)
def add_addendum(report_id: RowId, body: AddendumRequest, user: Signer, session: SessionDep, settings: SettingsDep,
                 request: Request) -> ReportPublic:
    """Sign an addendum to a final report: a new version (HL7 result status C) with the whole report
    and its addenda, delivered after the versions before it. 409 before the report is final."""
    begin_write(session)
    report = _report_or_404(session, report_id, for_update=True)
    try:
        version = reports.add_addendum(session=session, report=report, text=body.text, user=user,
                                       destinations=_destinations(settings), give_up_after=_give_up_after(settings))
    except reports.ReportError as exc:
        raise HTTPException(_CODES[exc.kind], detail=str(exc)) from None
    audit.record(session=session, actor=user.username, user_id=user.id, action="report.addendum",
                 entity_type="report", entity_id=str(report.id),
                 detail={"accession": report.study.accession_number, "version": version.version})
    session.commit()
    _wake_senders(request)
    return _public(session, report)


@router.get("/reports/{report_id}/deliveries", response_model=list[DeliveryPublic])
def report_deliveries(report_id: RowId, user: CurrentUser, session: SessionDep,
                      read_audit: ReadAuditDep) -> list[DeliveryPublic]:
    """One row per signed version and destination: status, attempts, last error, next attempt."""
    report = _report_or_404(session, report_id)
    rows = outbox.for_report(session=session, report_id=report.id)
    public = DeliveryPublic.many(rows, outbox.waiting_for(session=session, deliveries=rows))
    read_audit(actor=user.username, user_id=user.id, action="report.deliveries_read",
               entity_type="report", entity_id=str(report.id))
    return public


@router.post("/reports/{report_id}/suggest-impression", response_model=ImpressionSuggestion)
def suggest_impression(report_id: RowId, user: Editor, session: SessionDep,
                       settings: SettingsDep) -> ImpressionSuggestion:
    """An impression the LLM draws from the findings, checked by the guard (it may leave findings
    out, never change or add one). Only a suggestion: the report is unchanged until the
    radiologist puts it in with a PATCH. ``suggestion`` is null, with the ``reason``, when the
    LLM is off, unreachable or refused by the guard. Waits at most ``llm.timeout_s``."""
    report = _report_or_404(session, report_id)
    findings = report.sections.get("findings", "").strip()
    if not findings:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail="the report has no findings to draw an impression from")
    study = report.study
    terms = study_terms(_vocabulary(settings.whisper.vocabulary_dir), modality=study.modality,
                        procedure=study.procedure_text)
    refiner = LlmRefiner(make_model(settings.llm), Prompts.load(settings.llm.prompts_dir), Guard(terms))
    revision = report.revision
    session.commit()  # no transaction stays open while the LLM works (up to llm.timeout_s)
    outcome = refiner.suggest_impression(findings)
    begin_write(session)  # the audit row, in its own short transaction
    audit.record(session=session, actor=user.username, user_id=user.id, action="report.impression_suggested",
                 entity_type="report", entity_id=str(report.id),
                 detail={"suggested": outcome.by_llm, "seconds": round(outcome.seconds, 2)})
    session.commit()
    return ImpressionSuggestion(report_id=report.id, suggestion=outcome.text if outcome.by_llm else None,
                                reason=outcome.reason, revision=revision)
