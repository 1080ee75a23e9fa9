"""Patients and studies: what the RIS ordered and where each study stands."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from radservice.db.base import Base, UtcDateTime, utcnow


class StudyStatus(StrEnum):
    """Where a study stands on the way from order to final report."""

    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    DICTATED = "dictated"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    CANCELLED = "cancelled"


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    # Assigning authority of the patient ID ('' when the sender gives none).
    issuer: Mapped[str] = mapped_column(String(64), default="")
    family_name: Mapped[str] = mapped_column(String(200), default="")
    given_name: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    # "year", "month" or "day": how much of birth_date the sender knew (the rest is the first day).
    birth_date_precision: Mapped[str] = mapped_column(String(5), default="day", server_default="day")
    sex: Mapped[str] = mapped_column(String(1), default="")
    # Set when an ADT^A40 merged this record into another; its studies moved there.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"
    # An accession number is unique only together with its issuer ('' when none is given).
    __table_args__ = (
        UniqueConstraint("accession_number", "accession_issuer"),
        CheckConstraint(
            "status IN ('scheduled', 'in_progress', 'dictated', 'preliminary', 'final', 'cancelled')",
            name="status",
        ),
        Index("ix_studies_worklist_order", "priority_rank", "ordered_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accession_number: Mapped[str] = mapped_column(String(64), index=True)
    accession_issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.SCHEDULED.value, index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    procedure_code: Mapped[str] = mapped_column(String(64), default="")
    procedure_text: Mapped[str] = mapped_column(String(200), default="")
    priority: Mapped[str] = mapped_column(String(8), default="R")
    # 0 STAT, 1 ASAP, 2 routine: the worklist's first sort key, kept as a column for its index.
    priority_rank: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    order_status: Mapped[str] = mapped_column(String(8), default="", server_default="")
    placer_order_number: Mapped[str] = mapped_column(String(64), default="")
    filler_order_number: Mapped[str] = mapped_column(String(64), default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(64), default="")
    scheduled_step_id: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    ordering_physician: Mapped[str] = mapped_column(String(200), default="")
    ordered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    # Lower-cased patient names and ID, accession and procedure: what worklist search matches
    # (on PostgreSQL through a trigram index, see migration 0003).
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")

    patient: Mapped[Patient] = relationship(back_populates="studies")


class InboundMessage(Base):
    """Every inbound message understood well enough to have a control ID, with the ACK it got.

    Stored in the same transaction as its effect, so a resend (same sender, control ID and
    content) is acknowledged again without being applied twice. ``content_hash`` tells a resend
    from new content under a reused control ID ('' on rows stored before it existed: their hash
    is computed from ``raw`` when needed).
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("sending_application", "sending_facility", "control_id", "content_hash",
                         name="uq_inbound_messages_sender_control_id_content"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    peer: Mapped[str] = mapped_column(String(64), default="")
    sending_application: Mapped[str] = mapped_column(String(64), default="")
    sending_facility: Mapped[str] = mapped_column(String(64), default="")
    control_id: Mapped[str] = mapped_column(String(64))
    message_type: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(8), default="")
    ack_code: Mapped[str] = mapped_column(String(2))
    error_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_text: Mapped[str] = mapped_column(String(200), default="")
    error_segment: Mapped[str] = mapped_column(String(3), default="")
    error_field: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
