"""Reports: read one, edit a draft's sections. Every read of report text is audited."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from integrations.ollama.client import make_model
from radservice.api.deps import CurrentUser, SessionDep, SettingsDep, require_role
from radservice.audit import service as audit
from radservice.pipeline.refine.guard import Guard
from radservice.pipeline.refine.llm import LlmRefiner, Prompts
from radservice.pipeline.vocabulary import TermList, load_vocabulary, study_terms
from radservice.reports import service as reports
from radservice.reports.models import Report
from radservice.reports.schemas import ImpressionSuggestion, ReportEdit, ReportPublic
from radservice.users.models import Role, User

router = APIRouter(prefix="/api/v1", tags=["reports"])

Editor = Annotated[User, Depends(require_role(Role.RADIOLOGIST, Role.RESIDENT, Role.EDITOR))]

_CODES = {"not_draft": status.HTTP_409_CONFLICT, "stale": status.HTTP_409_CONFLICT,
          "invalid": status.HTTP_422_UNPROCESSABLE_CONTENT}


@functools.cache
def _vocabulary(folder: Path) -> list[TermList]:
    """The term lists, read once per API process (as a worker reads them once)."""
    return load_vocabulary(folder)


def _report_or_404(session: SessionDep, report_id: int) -> Report:
    report = reports.get(session=session, report_id=report_id)
    if report is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no report {report_id}")
    return report


@router.get("/reports/{report_id}", response_model=ReportPublic)
def get_report(report_id: int, user: CurrentUser, session: SessionDep) -> ReportPublic:
    """The report's sections, status, version and revision, and the refinement notes."""
    report = _report_or_404(session, report_id)
    audit.record(session=session, actor=user.username, user_id=user.id, action="report.read",
                 entity_type="report", entity_id=str(report.id))
    session.commit()
    return ReportPublic.of(report)


@router.patch("/reports/{report_id}", response_model=ReportPublic)
def edit_report(report_id: int, body: ReportEdit, user: Editor, session: SessionDep) -> ReportPublic:
    """Replace the text of some sections of a draft; 409 once signed or when ``revision`` is stale."""
    report = _report_or_404(session, report_id)
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
    return ReportPublic.of(report)


@router.post("/reports/{report_id}/suggest-impression", response_model=ImpressionSuggestion)
def suggest_impression(report_id: int, user: Editor, session: SessionDep,
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
    outcome = refiner.suggest_impression(findings)
    audit.record(session=session, actor=user.username, user_id=user.id, action="report.impression_suggested",
                 entity_type="report", entity_id=str(report.id),
                 detail={"suggested": outcome.by_llm, "seconds": round(outcome.seconds, 2)})
    session.commit()
    return ImpressionSuggestion(report_id=report.id, suggestion=outcome.text if outcome.by_llm else None,
                                reason=outcome.reason, revision=report.revision)
