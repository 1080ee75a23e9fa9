"""Reports: one per study, its sections' text, and the notes of what refinement changed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from radservice.db.base import Base, UtcDateTime, one_of, utcnow
from radservice.worklist.models import Study


class ReportStatus(StrEnum):
    DRAFT = "draft"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (one_of("status", ReportStatus),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=ReportStatus.DRAFT.value)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Every change (a dictation merged, an edit) adds one: a PATCH naming an older revision is
    # refused instead of overwriting text it never saw.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    template: Mapped[str] = mapped_column(String(100))
    # [[key, title], ...] in the template's order, then {key: text}.
    titles: Mapped[list[list[str]]] = mapped_column(JSON)
    sections: Mapped[dict[str, str]] = mapped_column(JSON)
    # "rules" (no LLM step yet), "llm", or "rules-only: <why the LLM's text was not used>"
    refinement: Mapped[str] = mapped_column(String(300), default="rules")
    # [{"dictation_id", "section", "rule", "before", "after"}, ...]
    notes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The dictations already merged (a retried job merges nothing twice).
    dictation_ids: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)

    study: Mapped[Study] = relationship()


class VersionKind(StrEnum):
    """What signing made a version: the preliminary or final report, or an addendum to a final one."""

    PRELIMINARY = "preliminary"
    FINAL = "final"
    ADDENDUM = "addendum"


#: HL7 result status (OBR-25 / OBX-11) of each kind of version.
RESULT_STATUS = {VersionKind.PRELIMINARY: "P", VersionKind.FINAL: "F", VersionKind.ADDENDUM: "C"}


class ReportVersion(Base):
    """One signed version of a report, immutable once written: what was signed, by whom, when,
    and the identifiers chosen at signing (the SR's SOP Instance UID; the HL7 control IDs live on
    its outbox rows), so that every retry resends the same ones."""

    __tablename__ = "report_versions"
    __table_args__ = (UniqueConstraint("report_id", "version"), one_of("kind", VersionKind))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    #: P, F or C (HL7 table 0123)
    result_status: Mapped[str] = mapped_column(String(1))
    # [[key, title], ...] and {key: text} as signed.
    titles: Mapped[list[list[str]]] = mapped_column(JSON)
    sections: Mapped[dict[str, str]] = mapped_column(JSON)
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    # The signer as they were named when they signed (an account renamed later changes no report).
    signer_username: Mapped[str] = mapped_column(String(64))
    signer_name: Mapped[str] = mapped_column(String(200), default="")
    #: The signer's name in parts at signing (users.names.PersonName.as_dict); None on versions
    #: signed before it was kept (then read from signer_name).
    signer_parts: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sr_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)

    report: Mapped[Report] = relationship()
