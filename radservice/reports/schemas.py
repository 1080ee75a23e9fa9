"""API shapes of reports."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from radservice.reports.models import Report, ReportVersion


class SectionTitle(BaseModel):
    key: str
    title: str


class RefinementNote(BaseModel):
    """One change the refinement made: which dictation, which rule, the text before and after."""

    dictation_id: str
    rule: str
    before: str
    after: str


class VersionPublic(BaseModel):
    """One signed version: immutable."""

    version: int
    kind: str
    #: HL7 result status: P preliminary, F final, C correction (addendum)
    result_status: str
    signed_by: str
    signer_name: str
    signed_at: datetime
    sr_instance_uid: str

    @classmethod
    def of(cls, v: ReportVersion) -> VersionPublic:
        return cls(version=v.version, kind=v.kind, result_status=v.result_status, signed_by=v.signer_username,
                   signer_name=v.signer_name, signed_at=v.signed_at, sr_instance_uid=v.sr_instance_uid)


class ReportPublic(BaseModel):
    report_id: int
    accession_number: str
    status: str
    version: int
    #: Send it back with a PATCH: an edit based on an older revision is refused (409).
    revision: int
    template: str
    #: Section key -> text, in the template's order.
    sections: dict[str, str]
    section_titles: list[SectionTitle]
    refinement_notes: list[RefinementNote]
    #: "rules" (nothing for the LLM yet), "llm", or "rules-only: <why the LLM's text was not used>".
    refinement: str
    dictation_ids: list[str]
    #: Who signed the current version (None for a draft).
    signed_by: str | None
    signed_at: datetime | None
    versions: list[VersionPublic]
    #: What a person should know about its deliveries (e.g. a Study Instance UID that had to be made).
    warnings: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: Report, versions: list[ReportVersion] | None = None,
           warnings: list[str] | None = None) -> ReportPublic:
        signed = [VersionPublic.of(v) for v in versions or []]
        order = [key for key, _ in r.titles]
        return cls(report_id=r.id, accession_number=r.study.accession_number, status=r.status, version=r.version,
                   revision=r.revision, template=r.template,
                   sections={key: r.sections.get(key, "") for key in order},
                   section_titles=[SectionTitle(key=k, title=t) for k, t in r.titles],
                   refinement_notes=[RefinementNote(**n) for n in r.notes], refinement=r.refinement,
                   dictation_ids=list(r.dictation_ids), signed_by=signed[-1].signed_by if signed else None,
                   signed_at=signed[-1].signed_at if signed else None, versions=signed,
                   warnings=list(warnings or []), created_at=r.created_at,
                   updated_at=r.updated_at)


class ReportEdit(BaseModel):
    """New text for some sections of a draft (the others stay as they are)."""

    sections: dict[str, str] = Field(min_length=1)
    revision: int = Field(ge=1, le=2**31 - 1, description="the revision the edit is based on, as read: "
                          "409 if the report changed since (another edit, a dictation, a signature)")


class ImpressionSuggestion(BaseModel):
    """An LLM-suggested impression: not in the report until accepted (PATCH the impression)."""

    report_id: int
    suggestion: str | None
    #: Why there is no suggestion (LLM off, unreachable, refused by the guard); empty otherwise.
    reason: str
    #: The revision the suggestion was drawn from (send it with the PATCH that accepts it).
    revision: int
    status: str = "suggestion"


class SignRequest(BaseModel):
    status: Literal["preliminary", "final"]
    revision: int = Field(ge=1, le=2**31 - 1, description="the revision the signer read: 409 if the report "
                          "changed since (what is signed is exactly the text the signer saw)")


class AddendumRequest(BaseModel):
    text: str = Field(min_length=1)

