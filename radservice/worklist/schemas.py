"""API shapes of the worklist: what radiologists' clients read (apart from the tables)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from pydantic import BaseModel

from radservice.dictation.models import Dictation
from radservice.dictation.schemas import DictationPublic
from radservice.reports.models import Report
from radservice.worklist.models import Patient, Study


class PatientPublic(BaseModel):
    patient_id: str
    issuer: str
    family_name: str
    given_name: str
    birth_date: date | None
    #: "year" or "month" when the RIS sent only that much (birth_date is then its first day).
    birth_date_precision: str
    sex: str

    @classmethod
    def of(cls, patient: Patient) -> PatientPublic:
        return cls(patient_id=patient.patient_id, issuer=patient.issuer, family_name=patient.family_name,
                   given_name=patient.given_name, birth_date=patient.birth_date,
                   birth_date_precision=patient.birth_date_precision, sex=patient.sex)


class WorklistRow(BaseModel):
    accession_number: str
    accession_issuer: str
    status: str
    priority: str
    modality: str
    procedure_code: str
    procedure_text: str
    reason: str
    ordered_at: datetime | None
    study_instance_uid: str | None
    patient: PatientPublic

    @classmethod
    def of(cls, study: Study) -> WorklistRow:
        return cls(
            accession_number=study.accession_number, accession_issuer=study.accession_issuer,
            status=study.status, priority=study.priority, modality=study.modality,
            procedure_code=study.procedure_code, procedure_text=study.procedure_text, reason=study.reason,
            ordered_at=study.ordered_at, study_instance_uid=study.study_instance_uid,
            patient=PatientPublic.of(study.patient),
        )


class WorklistPage(BaseModel):
    items: list[WorklistRow]
    #: Matching studies, counted up to ``total_cap``; ``total_is_exact`` false means "at least".
    total: int
    total_is_exact: bool
    limit: int
    offset: int
    next_offset: int | None


class OrderPublic(BaseModel):
    placer_order_number: str
    filler_order_number: str
    requested_procedure_id: str
    scheduled_step_id: str
    procedure_code: str
    procedure_text: str
    modality: str
    priority: str
    reason: str
    ordering_physician: str
    ordered_at: datetime | None
    order_status: str


class StudyDetail(BaseModel):
    accession_number: str
    accession_issuer: str
    status: str
    study_instance_uid: str | None
    patient: PatientPublic
    order: OrderPublic
    dictations: list[DictationPublic]
    reports: list[dict[str, object]]
    report_id: int | None
    #: The sections of the report's template (key, title), in order: of the report when there is
    #: one, else of the template a new draft would be made from (the page shows them to type in).
    template_sections: list[dict[str, str]] = []
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, study: Study, dictations: Sequence[Dictation] = (), report: Report | None = None,
           template_sections: Sequence[tuple[str, str]] = ()) -> StudyDetail:
        order = OrderPublic(
            placer_order_number=study.placer_order_number, filler_order_number=study.filler_order_number,
            requested_procedure_id=study.requested_procedure_id, scheduled_step_id=study.scheduled_step_id,
            procedure_code=study.procedure_code, procedure_text=study.procedure_text, modality=study.modality,
            priority=study.priority, reason=study.reason, ordering_physician=study.ordering_physician,
            ordered_at=study.ordered_at, order_status=study.order_status,
        )
        return cls(accession_number=study.accession_number, accession_issuer=study.accession_issuer,
                   status=study.status, study_instance_uid=study.study_instance_uid,
                   patient=PatientPublic.of(study.patient), order=order,
                   dictations=[DictationPublic.of(d) for d in dictations],
                   reports=[{"report_id": report.id, "version": report.version, "status": report.status}]
                   if report else [],
                   report_id=report.id if report else None,
                   template_sections=[{"key": k, "title": t}
                                      for k, t in (report.titles if report else template_sections)],
                   created_at=study.created_at, updated_at=study.updated_at)
