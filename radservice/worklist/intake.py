"""What an order message means, in the domain's words: the data the HL7 codec hands in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum


class OrderControl(StrEnum):
    """What the RIS asks for (ORC-1, reduced to what a reporting system acts on)."""

    NEW = "new"  # NW
    CANCEL = "cancel"  # CA, OC, DC, OD
    CHANGE = "change"  # XO, XX, SC


class Priority(StrEnum):
    """Reading priority; the worklist sorts STAT first."""

    STAT = "S"
    ASAP = "A"
    ROUTINE = "R"


#: Sort rank per priority (lower reads first).
PRIORITY_RANK = {Priority.STAT: 0, Priority.ASAP: 1, Priority.ROUTINE: 2}


@dataclass(frozen=True)
class PatientData:
    """A patient as a message identifies and describes them."""

    patient_id: str
    issuer: str = ""
    family_name: str = ""
    given_name: str = ""
    birth_date: date | None = None
    #: How much of the birth date was sent: "year", "month" or "day" (HL7 allows YYYY and YYYYMM);
    #: ``birth_date`` is then the first day of that year or month.
    birth_date_precision: str = "day"
    sex: str = ""


@dataclass(frozen=True)
class OrderData:
    """One requested procedure of an order message."""

    control: OrderControl
    patient: PatientData
    accession_number: str
    accession_issuer: str = ""
    placer_order_number: str = ""
    filler_order_number: str = ""
    requested_procedure_id: str = ""
    scheduled_step_id: str = ""
    study_instance_uid: str | None = None
    procedure_code: str = ""
    procedure_text: str = ""
    modality: str = ""
    priority: Priority = Priority.ROUTINE
    reason: str = ""
    ordering_physician: str = ""
    ordered_at: datetime | None = None
    order_status: str = ""


@dataclass(frozen=True)
class PatientMerge:
    """ADT^A40: the prior patient record is merged into the surviving one."""

    survivor: PatientData
    prior_patient_id: str
    prior_issuer: str = ""


class IntakeError(Exception):
    """An order that is understood but cannot be applied; nothing of it was stored."""

    #: A short machine-readable reason, mapped by each adapter to its own error codes.
    kind = "invalid"
    #: The piece of the order at fault, by its OrderData / PatientData / PatientMerge name
    #: (adapters map it to their own field, e.g. HL7 ``PID-3``).
    subject = "accession_number"

    def __init__(self, message: str, subject: str | None = None) -> None:
        super().__init__(message)
        if subject is not None:
            self.subject = subject


class UnknownOrder(IntakeError):
    kind = "unknown_order"


class UnknownPatient(IntakeError):
    kind = "unknown_patient"
    subject = "prior_patient_id"


class StudyAlreadyReported(IntakeError):
    kind = "already_reported"
