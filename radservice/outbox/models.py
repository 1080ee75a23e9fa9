"""The outbox: what must leave for which peer, written in the transaction that signs a version."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from radservice.db.base import Base, UtcDateTime, one_of, utcnow
from radservice.reports.models import ReportVersion


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its turn, its next attempt, or an earlier version
    SENT = "sent"  # on the wire, the peer's acknowledgement not yet read
    ACKED = "acked"  # the peer accepted it
    FAILED = "failed"  # refused by the peer or given up: needs a person (retry, skip or supersede)
    SUPERSEDED = "superseded"  # a later version of the report (which carries all of it) left instead
    SKIPPED = "skipped"  # an admin decided this version is not sent (the reason is on the row)


class Destination(StrEnum):
    RIS = "ris"  # HL7 ORU^R01 over MLLP
    PACS = "pacs"  # DICOM Basic Text SR, C-STORE


class Delivery(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("version_id", "destination"),
        one_of("status", DeliveryStatus),
        # What the dispatcher scans: due rows that are not finished.
        Index("ix_outbox_due", "status", "next_attempt_at", "id"),
        # Per study and destination, versions leave in order.
        Index("ix_outbox_order", "study_id", "destination", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("report_versions.id"))
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    #: The report version number (copied from the version: the ordering key).
    version: Mapped[int] = mapped_column(Integer)
    accession_number: Mapped[str] = mapped_column(String(64), index=True)
    destination: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    #: Chosen at signing and never changed: the HL7 message control ID (MSH-10) for the RIS.
    message_id: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: After this, a delivery that still fails for a passing reason (peer down) fails for good.
    give_up_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    #: The peer's answer: HL7 MSA-1 (AA, AE, AR) or a DICOM status (0x0000), when it gave one.
    ack_code: Mapped[str] = mapped_column(String(8), default="")
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    report_version: Mapped[ReportVersion] = relationship()
