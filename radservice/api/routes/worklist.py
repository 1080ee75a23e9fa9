"""The radiologists' worklist and study view; every read of patient data is audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import StringConstraints

from radservice.api.deps import CurrentUser, ReadAuditDep, SessionDep, SettingsDep, study_or_404, templates
from radservice.dictation import service as dictations
from radservice.reports import service as reports
from radservice.worklist import service as worklist
from radservice.worklist.intake import Priority
from radservice.worklist.models import StudyStatus
from radservice.worklist.schemas import StudyDetail, WorklistPage, WorklistRow

router = APIRouter(prefix="/api/v1", tags=["worklist"])

_STATUSES = {s.value for s in StudyStatus}
_PRIORITIES = {p.value for p in Priority}


def _one_or_more(values: set[str]) -> str:
    """A pattern of one value or a comma-separated list of them (the schema says what is accepted)."""
    one = "|".join(sorted(values))
    return f"^({one})(,({one}))*$"


StatusParam = Annotated[str, StringConstraints(pattern=_one_or_more(_STATUSES))]
PriorityParam = Annotated[str, StringConstraints(pattern=_one_or_more(_PRIORITIES))]


def _values(raw: list[str] | None) -> list[str]:
    """Repeated parameters and comma-separated lists both work: ?status=a&status=b or ?status=a,b."""
    return [part.strip() for item in raw or [] for part in item.split(",") if part.strip()]


def _check(name: str, values: list[str], allowed: set[str]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"unknown {name} {bad[0]!r}; one of: {', '.join(sorted(allowed))}")


@router.get("/worklist", response_model=WorklistPage)
def get_worklist(
    user: CurrentUser,
    session: SessionDep,
    read_audit: ReadAuditDep,
    status_: Annotated[list[StatusParam] | None, Query(alias="status", description="default: all awaiting a report; "
                                                         "repeated or comma-separated")] = None,
    modality: Annotated[list[str] | None, Query()] = None,
    priority: Annotated[list[PriorityParam] | None, Query(description="S (STAT), A (ASAP), R (routine); repeated "
                                                          "or comma-separated")] = None,
    q: Annotated[str, Query(max_length=100, description="free text over patient and procedure")] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> WorklistPage:
    """Studies awaiting a report: STAT first, then the oldest order first."""
    statuses = [s.lower() for s in _values(status_)]
    priorities = [p.upper() for p in _values(priority)]
    _check("status", statuses, _STATUSES)
    _check("priority", priorities, _PRIORITIES)
    flt = worklist.WorklistFilter(status=statuses, modality=_values(modality), priority=priorities, q=q.strip())
    rows, total = worklist.list_worklist(session=session, flt=flt, limit=limit, offset=offset)
    page = [WorklistRow.of(s) for s in rows]
    shown = [(s.accession_issuer, s.accession_number, s.patient.issuer, s.patient.patient_id) for s in rows]
    read_audit.once(("worklist", user.id, offset, *shown),
                    actor=user.username, user_id=user.id, action="worklist.read", entity_type="worklist",
                    detail={"returned": len(rows), "offset": offset, "accessions": [s[1] for s in shown],
                            "issuers": [s[0] for s in shown]})
    exact = total < worklist.COUNT_CAP
    more = offset + len(rows) < total or (not exact and len(rows) == limit)
    return WorklistPage(items=page, total=total, total_is_exact=exact, limit=limit,
                        offset=offset, next_offset=offset + len(rows) if more else None)


@router.get("/studies/{accession}", response_model=StudyDetail)
def get_study(
    accession: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    read_audit: ReadAuditDep,
    issuer: Annotated[str | None, Query(description="accession issuer, when the number is not unique")] = None,
) -> StudyDetail:
    """One study with its order and patient; 404 for an unknown accession."""
    study = study_or_404(session, accession, issuer)
    report = reports.for_study(session=session, study_id=study.id)
    template = None if report else templates(settings).pick(
        modality=study.modality, procedure_code=study.procedure_code, procedure_text=study.procedure_text)
    detail = StudyDetail.of(study, dictations.for_study(session=session, study_id=study.id), report,
                            [(s.key, s.title) for s in template.sections] if template else ())
    read_audit(actor=user.username, user_id=user.id, action="study.read",
               entity_type="study", entity_id=study.accession_number,
               detail={"issuer": study.accession_issuer})
    return detail
