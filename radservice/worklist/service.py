"""Worklist operations: apply orders and patient updates, record inbound messages, query studies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Select, String, func, or_, select, update
from sqlalchemy.orm import Session, joinedload

from radservice.worklist.intake import (
    PRIORITY_RANK,
    IntakeError,
    OrderControl,
    OrderData,
    PatientData,
    PatientMerge,
    StudyAlreadyReported,
    UnknownOrder,
    UnknownPatient,
)
from radservice.worklist.models import InboundMessage, Patient, Study, StudyStatus

#: Statuses that still need a radiologist: the worklist's default filter.
AWAITING_REPORT = (StudyStatus.SCHEDULED, StudyStatus.IN_PROGRESS, StudyStatus.DICTATED, StudyStatus.PRELIMINARY)
REPORTED = (StudyStatus.PRELIMINARY, StudyStatus.FINAL)


def _fit(model: type[Any], values: dict[str, Any]) -> dict[str, Any]:
    """Clip free-text values to their column's length (identifiers are checked, not clipped)."""
    table = model.__table__
    out = {}
    for key, value in values.items():
        column = table.columns[key]
        if isinstance(value, str) and isinstance(column.type, String) and column.type.length:
            value = value[: column.type.length]
        out[key] = value
    return out


def _check_identifier(name: str, value: str, limit: int = 64) -> None:
    if len(value) > limit:
        raise IntakeError(f"{name} longer than {limit} characters")


def upsert_patient(*, session: Session, data: PatientData) -> Patient:
    """Find the patient by ID and issuer, following merges, and refresh its demographics."""
    _check_identifier("patient ID", data.patient_id)
    _check_identifier("patient ID issuer", data.issuer)
    patient = session.scalar(
        select(Patient).where(Patient.patient_id == data.patient_id, Patient.issuer == data.issuer)
    )
    values = _fit(Patient, {
        "family_name": data.family_name, "given_name": data.given_name,
        "birth_date": data.birth_date, "sex": data.sex,
    })
    if patient is None:
        patient = Patient(patient_id=data.patient_id, issuer=data.issuer, **values)
        session.add(patient)
        session.flush()
        return patient
    while patient.merged_into_id is not None:
        merged = session.get(Patient, patient.merged_into_id)
        assert merged is not None
        patient = merged
    for key, value in values.items():
        if value not in ("", None):
            setattr(patient, key, value)
    return patient


class AmbiguousAccession(IntakeError):
    kind = "ambiguous"


def find_study(*, session: Session, accession_number: str, accession_issuer: str | None = None) -> Study | None:
    """The study with this accession number (and issuer, when given).

    Raises
    ------
    IntakeError
        Without an issuer, the accession number belongs to studies of several issuers.
    """
    query = select(Study).where(Study.accession_number == accession_number)
    if accession_issuer is not None:
        query = query.where(Study.accession_issuer == accession_issuer)
    rows = session.scalars(query.options(joinedload(Study.patient)).limit(2)).all()
    if len(rows) > 1:
        raise AmbiguousAccession(f"accession {accession_number} exists for several issuers; name the issuer")
    return rows[0] if rows else None


def _find_for_order(session: Session, order: OrderData) -> Study | None:
    study = find_study(session=session, accession_number=order.accession_number,
                       accession_issuer=order.accession_issuer)
    if study is not None:
        return study
    # A cancel may carry only the order numbers; match them, as the RIS knows the order by them.
    for column, number in ((Study.filler_order_number, order.filler_order_number),
                           (Study.placer_order_number, order.placer_order_number)):
        if number:
            found = session.scalars(select(Study).where(column == number).limit(2)).all()
            if len(found) == 1:
                return found[0]
    return None


def _order_values(order: OrderData) -> dict[str, Any]:
    return _fit(Study, {
        "placer_order_number": order.placer_order_number,
        "filler_order_number": order.filler_order_number,
        "requested_procedure_id": order.requested_procedure_id,
        "scheduled_step_id": order.scheduled_step_id,
        "study_instance_uid": order.study_instance_uid,
        "procedure_code": order.procedure_code,
        "procedure_text": order.procedure_text,
        "modality": order.modality,
        "priority": order.priority.value,
        "priority_rank": PRIORITY_RANK[order.priority],
        "reason": order.reason,
        "ordering_physician": order.ordering_physician,
        "ordered_at": order.ordered_at,
        "order_status": order.order_status,
    })


@dataclass(frozen=True)
class OrderOutcome:
    """What an order did: the study it touched and the action (created, updated, cancelled)."""

    study: Study
    action: str


def apply_order(*, session: Session, order: OrderData) -> OrderOutcome:
    """Create, change or cancel the study an order names. All checks come before any write.

    Raises
    ------
    UnknownOrder
        A cancel or change for an accession (and order numbers) never received.
    StudyAlreadyReported
        A cancel for a study with a preliminary or final report.
    IntakeError
        An identifier too long to store.
    """
    _check_identifier("accession number", order.accession_number)
    _check_identifier("accession issuer", order.accession_issuer)
    study = _find_for_order(session, order)
    if order.control is OrderControl.CANCEL or (order.control is OrderControl.CHANGE and order.order_status == "CA"):
        if study is None:
            raise UnknownOrder(f"cancel for unknown order {order.accession_number}")
        if study.status in REPORTED:
            raise StudyAlreadyReported(f"study {study.accession_number} is already reported ({study.status})")
        study.status = StudyStatus.CANCELLED.value
        return OrderOutcome(study, "cancelled")
    if order.control is OrderControl.CHANGE and study is None:
        raise UnknownOrder(f"change for unknown order {order.accession_number}")

    patient = upsert_patient(session=session, data=order.patient)
    values = _order_values(order)
    if study is None:
        study = Study(accession_number=order.accession_number, accession_issuer=order.accession_issuer,
                      patient_id=patient.id, status=StudyStatus.SCHEDULED.value, **values)
        session.add(study)
        session.flush()
        return OrderOutcome(study, "created")
    for key, value in values.items():
        if value not in ("", None):
            setattr(study, key, value)
    study.patient_id = patient.id
    if study.status == StudyStatus.CANCELLED.value and order.control is OrderControl.NEW:
        study.status = StudyStatus.SCHEDULED.value
    return OrderOutcome(study, "updated")


def update_demographics(*, session: Session, data: PatientData) -> Patient:
    """ADT^A08: refresh a patient's demographics (creating the record if it is new to us)."""
    return upsert_patient(session=session, data=data)


def merge_patients(*, session: Session, merge: PatientMerge) -> Patient:
    """ADT^A40: move the prior record's studies to the survivor and mark the prior merged.

    Raises
    ------
    UnknownPatient
        The prior identifier is not known.
    """
    prior = session.scalar(select(Patient).where(Patient.patient_id == merge.prior_patient_id,
                                                 Patient.issuer == merge.prior_issuer))
    if prior is None:
        raise UnknownPatient(f"merge of unknown patient record {merge.prior_patient_id}")
    survivor = upsert_patient(session=session, data=merge.survivor)
    if survivor.id == prior.id:
        return survivor
    session.execute(update(Study).where(Study.patient_id == prior.id).values(patient_id=survivor.id))
    prior.merged_into_id = survivor.id
    return survivor


# --- inbound message log -------------------------------------------------------------


def find_inbound(*, session: Session, sending_application: str, sending_facility: str,
                 control_id: str) -> InboundMessage | None:
    """A message already received from this sender with this control ID."""
    return session.scalar(select(InboundMessage).where(
        InboundMessage.sending_application == sending_application,
        InboundMessage.sending_facility == sending_facility,
        InboundMessage.control_id == control_id,
    ))


def record_inbound(*, session: Session, **values: Any) -> InboundMessage:
    """Store an inbound message and the ACK it gets, in the caller's transaction."""
    known = {f.name for f in InboundMessage.__table__.columns}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown inbound message fields: {sorted(unknown)}")
    row = InboundMessage(**_fit(InboundMessage, values))
    session.add(row)
    return row


# --- queries -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistFilter:
    """What a radiologist narrows the worklist by; every field optional."""

    status: Sequence[str] = ()
    modality: Sequence[str] = ()
    priority: Sequence[str] = ()
    q: str = ""

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))


def _worklist_query(flt: WorklistFilter) -> Select[tuple[Study]]:
    query = select(Study).join(Study.patient)
    statuses = list(flt.status) or [s.value for s in AWAITING_REPORT]
    query = query.where(Study.status.in_(statuses))
    if flt.modality:
        query = query.where(Study.modality.in_([m.upper() for m in flt.modality]))
    if flt.priority:
        query = query.where(Study.priority.in_([p.upper() for p in flt.priority]))
    if flt.q:
        pattern = "%" + flt.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(
            func.lower(Patient.family_name).like(pattern, escape="\\"),
            func.lower(Patient.given_name).like(pattern, escape="\\"),
            func.lower(Patient.patient_id).like(pattern, escape="\\"),
            func.lower(Study.accession_number).like(pattern, escape="\\"),
            func.lower(Study.procedure_text).like(pattern, escape="\\"),
        ))
    return query


def list_worklist(*, session: Session, flt: WorklistFilter, limit: int = 50,
                  offset: int = 0) -> tuple[list[Study], int]:
    """Studies matching the filter, STAT first, then oldest order first; and how many match."""
    query = _worklist_query(flt)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.options(joinedload(Study.patient))
        .order_by(Study.priority_rank, Study.ordered_at.asc().nulls_last(), Study.id)
        .limit(limit).offset(offset)
    ).all()
    return list(rows), int(total)

