"""Worklist operations: apply orders and patient updates, record inbound messages, query studies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, String, Table, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session, joinedload

from radservice.db.base import Base, utcnow
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


@cache
def _lengths(table: Table) -> dict[str, int]:
    return {column.key: column.type.length for column in table.columns
            if isinstance(column.type, String) and column.type.length}


def _fit(model: type[Any], values: dict[str, Any]) -> dict[str, Any]:
    """Clip free-text values to their column's length (identifiers are checked, not clipped)."""
    lengths = _lengths(model.__table__)
    return {key: value[: lengths[key]] if key in lengths and isinstance(value, str) else value
            for key, value in values.items()}


def _check_identifier(name: str, value: str, subject: str, limit: int = 64) -> None:
    if len(value) > limit:
        raise IntakeError(f"{name} longer than {limit} characters", subject)


# Intake runs for every message a RIS sends: its statements are built once, with bind
# parameters, and run on the session's connection (no ORM unit of work, no per-call compiling).
_patients = Base.metadata.tables["patients"]
_studies = Base.metadata.tables["studies"]
_INSERT_STUDY = insert(_studies)
_SELECT_STUDY_BY_ACCESSION = select(
    _studies.c.id, _studies.c.accession_number, _studies.c.status, _studies.c.procedure_text,
).where(
    _studies.c.accession_number == bindparam("accession_number"),
    _studies.c.accession_issuer == bindparam("accession_issuer"),
)
_PATIENT_COLUMNS = (_patients.c.id, _patients.c.merged_into_id, _patients.c.patient_id, _patients.c.family_name,
                    _patients.c.given_name)
_SELECT_MERGED = select(*_PATIENT_COLUMNS).where(_patients.c.id == bindparam("id"))
# One statement for both dialects (SQLite >= 3.35 and PostgreSQL share this syntax). Written as
# text because SQLAlchemy cannot cache a compiled ON CONFLICT DO UPDATE with CASE expressions and
# would compile it again for every order.
_UPSERT_PATIENT = text("""
    INSERT INTO patients (patient_id, issuer, family_name, given_name, birth_date, birth_date_precision, sex,
                          created_at, updated_at, merged_into_id)
    VALUES (:patient_id, :issuer, :family_name, :given_name, :birth_date, :birth_date_precision, :sex,
            :created_at, :updated_at, NULL)
    ON CONFLICT (patient_id, issuer) DO UPDATE SET
        family_name = CASE WHEN excluded.family_name = '' THEN patients.family_name ELSE excluded.family_name END,
        given_name = CASE WHEN excluded.given_name = '' THEN patients.given_name ELSE excluded.given_name END,
        sex = CASE WHEN excluded.sex = '' THEN patients.sex ELSE excluded.sex END,
        birth_date_precision = CASE WHEN excluded.birth_date IS NULL THEN patients.birth_date_precision
                                    ELSE excluded.birth_date_precision END,
        birth_date = COALESCE(excluded.birth_date, patients.birth_date),
        updated_at = excluded.updated_at
    RETURNING id, merged_into_id, patient_id, family_name, given_name
""").bindparams(
    bindparam("birth_date", type_=_patients.c.birth_date.type),
    bindparam("created_at", type_=_patients.c.created_at.type),
    bindparam("updated_at", type_=_patients.c.updated_at.type),
)


@dataclass(frozen=True)
class PatientKey:
    """The stored patient an order was filed under, with what worklist search matches."""

    id: int
    patient_id: str
    family_name: str
    given_name: str


def search_text(*parts: str) -> str:
    """What free-text worklist search matches: names, IDs and procedure, lower-cased, one string."""
    return " ".join(part.lower() for part in parts if part)


def upsert_patient(*, session: Session, data: PatientData) -> PatientKey:
    """Insert or refresh the patient (ID + issuer) in one statement; return the record to file studies under.

    Demographics sent empty keep what is stored. A record merged away (ADT^A40) answers with
    the record it was merged into.
    """
    _check_identifier("patient ID", data.patient_id, "patient_id")
    _check_identifier("patient ID issuer", data.issuer, "issuer")
    now = utcnow()
    conn = session.connection()
    params = _fit(Patient, {
        "patient_id": data.patient_id, "issuer": data.issuer, "family_name": data.family_name,
        "given_name": data.given_name, "birth_date": data.birth_date,
        "birth_date_precision": data.birth_date_precision, "sex": data.sex,
        "created_at": now, "updated_at": now,
    })
    row = conn.execute(_UPSERT_PATIENT, params).one()
    while row.merged_into_id is not None:
        row = conn.execute(_SELECT_MERGED, {"id": row.merged_into_id}).one()
    return PatientKey(int(row.id), row.patient_id, row.family_name, row.given_name)


class AmbiguousAccession(IntakeError):
    kind = "ambiguous"


def find_study(*, session: Session, accession_number: str, accession_issuer: str | None = None) -> Study | None:
    """The study with this accession number (and issuer, when given).

    Raises
    ------
    AmbiguousAccession
        Without an issuer, the accession number belongs to studies of several issuers.
    """
    query = select(Study).where(Study.accession_number == accession_number)
    if accession_issuer is not None:
        query = query.where(Study.accession_issuer == accession_issuer)
    rows = session.scalars(query.options(joinedload(Study.patient)).limit(2)).all()
    if len(rows) > 1:
        raise AmbiguousAccession(f"accession {accession_number} exists for several issuers; name the issuer")
    return rows[0] if rows else None


@dataclass(frozen=True)
class _StudyKey:
    id: int
    accession_number: str
    status: str
    procedure_text: str


def _find_for_order(session: Session, order: OrderData) -> _StudyKey | None:
    columns = (Study.id, Study.accession_number, Study.status, Study.procedure_text)
    row = session.connection().execute(_SELECT_STUDY_BY_ACCESSION, {
        "accession_number": order.accession_number, "accession_issuer": order.accession_issuer,
    }).first()
    if row is not None or order.control is OrderControl.NEW:
        return _StudyKey(*row) if row is not None else None
    # A cancel or change may carry only the order numbers the RIS knows the order by.
    for column, number in ((Study.filler_order_number, order.filler_order_number),
                           (Study.placer_order_number, order.placer_order_number)):
        if number:
            found = session.execute(select(*columns).where(column == number).limit(2)).all()
            if len(found) == 1:
                return _StudyKey(*found[0])
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
    """What an order did to which study: created, updated or cancelled."""

    study_id: int | None
    accession_number: str
    action: str


def apply_order(*, session: Session, order: OrderData) -> OrderOutcome:
    """Create, change or cancel the study an order names. All checks come before any write.

    Intake runs for every message a RIS sends, so this is a handful of Core statements
    (find, upsert patient, insert or update study) rather than ORM unit-of-work round trips.

    Raises
    ------
    UnknownOrder
        A cancel or change for an accession (and order numbers) never received.
    StudyAlreadyReported
        A cancel for a study with a preliminary or final report.
    IntakeError
        An identifier too long to store.
    """
    _check_identifier("accession number", order.accession_number, "accession_number")
    _check_identifier("accession issuer", order.accession_issuer, "accession_issuer")
    study = _find_for_order(session, order)
    now = utcnow()
    if order.control is OrderControl.CANCEL or (order.control is OrderControl.CHANGE and order.order_status == "CA"):
        if study is None:
            raise UnknownOrder(f"cancel for unknown order {order.accession_number}")
        if study.status in REPORTED:
            raise StudyAlreadyReported(f"study {study.accession_number} is already reported ({study.status})")
        # only while still unreported, checked in the UPDATE itself: a signature committed since the
        # read above (its row lock is on the study too) wins, and the cancel is refused
        cancelled = session.execute(update(Study).where(Study.id == study.id, Study.status.not_in(REPORTED))
                                    .values(status=StudyStatus.CANCELLED.value, updated_at=now))
        if not getattr(cancelled, "rowcount", 0):
            raise StudyAlreadyReported(f"study {study.accession_number} was reported meanwhile")
        return OrderOutcome(study.id, study.accession_number, "cancelled")
    if order.control is OrderControl.CHANGE and study is None:
        raise UnknownOrder(f"change for unknown order {order.accession_number}")

    patient = upsert_patient(session=session, data=order.patient)
    values = _order_values(order)
    if study is None:
        session.connection().execute(_INSERT_STUDY, {
            "accession_number": order.accession_number, "accession_issuer": order.accession_issuer,
            "patient_id": patient.id, "status": StudyStatus.SCHEDULED.value, "created_at": now,
            "updated_at": now, **values,
            "search_text": search_text(patient.family_name, patient.given_name, patient.patient_id,
                                       order.accession_number, order.procedure_text)})
        return OrderOutcome(None, order.accession_number, "created")
    changes = {key: value for key, value in values.items() if value not in ("", None)}
    changes.update(patient_id=patient.id, updated_at=now, search_text=search_text(
        patient.family_name, patient.given_name, patient.patient_id, study.accession_number,
        order.procedure_text or study.procedure_text))
    if study.status == StudyStatus.CANCELLED.value and order.control is OrderControl.NEW:
        changes["status"] = StudyStatus.SCHEDULED.value
    session.execute(update(Study).where(Study.id == study.id).values(**changes))
    return OrderOutcome(study.id, study.accession_number, "updated")


def _refresh_search_text(session: Session, patient: PatientKey) -> None:
    """Names changed: what search matches changes on every study of the patient."""
    conn = session.connection()
    rows = conn.execute(select(Study.id, Study.accession_number, Study.procedure_text)
                        .where(Study.patient_id == patient.id)).all()
    for study_id, accession, procedure in rows:
        conn.execute(update(Study).where(Study.id == study_id).values(
            search_text=search_text(patient.family_name, patient.given_name, patient.patient_id, accession, procedure)))


def update_demographics(*, session: Session, data: PatientData) -> int:
    """ADT^A08: refresh a patient's demographics (creating the record if it is new to us)."""
    patient = upsert_patient(session=session, data=data)
    _refresh_search_text(session, patient)
    return patient.id


def merge_patients(*, session: Session, merge: PatientMerge) -> int:
    """ADT^A40: move the prior record's studies to the survivor and mark the prior merged.

    Raises
    ------
    UnknownPatient
        The prior identifier is not known.
    """
    prior = session.scalar(select(Patient.id).where(Patient.patient_id == merge.prior_patient_id,
                                                    Patient.issuer == merge.prior_issuer))
    if prior is None:
        raise UnknownPatient(f"merge of unknown patient record {merge.prior_patient_id}")
    survivor = upsert_patient(session=session, data=merge.survivor)
    if survivor.id != prior:
        session.execute(update(Study).where(Study.patient_id == prior).values(patient_id=survivor.id))
        session.execute(update(Patient).where(Patient.id == prior).values(merged_into_id=survivor.id))
        _refresh_search_text(session, survivor)
    return survivor.id


# --- inbound message log -------------------------------------------------------------


@dataclass(frozen=True)
class InboundAck:
    """What a message already received was answered, and what identifies its content."""

    id: int
    ack_code: str
    error_code: int | None
    error_text: str
    error_segment: str
    error_field: int | None
    accession_number: str
    content_hash: str
    raw: bytes


_inbound = Base.metadata.tables["inbound_messages"]
_SELECT_INBOUND = select(
    _inbound.c.id, _inbound.c.ack_code, _inbound.c.error_code, _inbound.c.error_text, _inbound.c.error_segment,
    _inbound.c.error_field, _inbound.c.accession_number, _inbound.c.content_hash, _inbound.c.raw,
).where(
    _inbound.c.sending_application == bindparam("sending_application"),
    _inbound.c.sending_facility == bindparam("sending_facility"),
    _inbound.c.control_id == bindparam("control_id"),
).order_by(_inbound.c.id)
_INSERT_INBOUND = insert(_inbound)


def find_inbound(*, session: Session, sending_application: str, sending_facility: str,
                 control_id: str) -> list[InboundAck]:
    """Every message already received from this sender with this control ID, oldest first.

    Usually none or one; several when a sender reused a control ID for other content.
    """
    rows = session.connection().execute(_SELECT_INBOUND, {
        "sending_application": sending_application, "sending_facility": sending_facility,
        "control_id": control_id,
    }).all()
    return [InboundAck(*row) for row in rows]


def record_inbound(*, session: Session, **values: Any) -> None:
    """Store an inbound message and the ACK it gets, in the caller's transaction."""
    _check_inbound_fields(values)
    session.connection().execute(_INSERT_INBOUND, {"received_at": utcnow(), **_fit(InboundMessage, values)})


def update_inbound(*, session: Session, inbound_id: int, **values: Any) -> None:
    """Replace the answer stored for a message evaluated again (it was not accepted before)."""
    _check_inbound_fields(values)
    session.connection().execute(update(_inbound).where(_inbound.c.id == inbound_id).values(
        received_at=utcnow(), **_fit(InboundMessage, values)))


def _check_inbound_fields(values: dict[str, Any]) -> None:
    known = {f.name for f in InboundMessage.__table__.columns}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown inbound message fields: {sorted(unknown)}")


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


def _worklist_conditions(flt: WorklistFilter) -> list[ColumnElement[bool]]:
    statuses = list(flt.status) or [s.value for s in AWAITING_REPORT]
    conditions: list[ColumnElement[bool]] = [Study.status.in_(statuses)]
    if flt.modality:
        conditions.append(Study.modality.in_([m.upper() for m in flt.modality]))
    if flt.priority:
        conditions.append(Study.priority.in_([p.upper() for p in flt.priority]))
    if flt.q:
        # search_text is lower-cased when written (Python's lower(), the same as here), and on
        # PostgreSQL a trigram index answers LIKE '%...%' on it.
        pattern = "%" + flt.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(Study.search_text.like(pattern, escape="\\"))
    return conditions


#: Counting stops here: past it the page says "more than", which is all a worklist needs and
#: keeps a search that matches a quarter of the department's history fast.
COUNT_CAP = 1000


def list_worklist(*, session: Session, flt: WorklistFilter, limit: int = 50,
                  offset: int = 0) -> tuple[list[Study], int]:
    """Studies matching the filter, STAT first, then oldest order first; and how many match.

    The count is exact up to ``COUNT_CAP`` and ``COUNT_CAP`` beyond it (callers say "1000+").
    """
    conditions = _worklist_conditions(flt)
    rows = list(session.scalars(
        select(Study).where(*conditions).options(joinedload(Study.patient))
        .order_by(Study.priority_rank, Study.ordered_at.asc().nulls_last(), Study.id)
        .limit(limit).offset(offset)
    ).all())
    if offset == 0 and len(rows) < limit:
        return rows, len(rows)
    capped = select(Study.id).where(*conditions).limit(COUNT_CAP).subquery()
    total = session.scalar(select(func.count()).select_from(capped)) or 0
    return rows, max(int(total), offset + len(rows))
