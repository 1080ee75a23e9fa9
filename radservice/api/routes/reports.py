"""Reports: read one, edit a draft's sections. Every read of report text is audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from radservice.api.deps import CurrentUser, SessionDep, require_role
from radservice.audit import service as audit
from radservice.reports import service as reports
from radservice.reports.models import Report
from radservice.reports.schemas import ReportEdit, ReportPublic
from radservice.users.models import Role, User

router = APIRouter(prefix="/api/v1", tags=["reports"])

Editor = Annotated[User, Depends(require_role(Role.RADIOLOGIST, Role.RESIDENT, Role.EDITOR))]

_CODES = {"not_draft": status.HTTP_409_CONFLICT, "stale": status.HTTP_409_CONFLICT,
          "invalid": status.HTTP_422_UNPROCESSABLE_CONTENT}


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
