"""Report operations: the draft a study's first dictation creates, dictations merged into it,
edits by the radiologist. Keyword-only, on the caller's session; the caller commits."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from radservice.db.base import utcnow
from radservice.outbox import service as outbox
from radservice.pipeline.compose import Template
from radservice.pipeline.refine.changes import Change
from radservice.reports.models import RESULT_STATUS, Report, ReportStatus, ReportVersion, VersionKind
from radservice.reports.text import clean_text
from radservice.users import service as users
from radservice.users.models import Role, User
from radservice.worklist.models import Study, StudyStatus

#: The job that refines a stored transcript and merges it into the report (reports.flows.DraftFlow).
DRAFT_REPORT = "draft_report"
#: Study statuses a first dictation moves on to ``dictated``.
_BEFORE_DICTATED = (StudyStatus.SCHEDULED.value, StudyStatus.IN_PROGRESS.value)
#: Most text one section may hold (a pasted book is a mistake, not a report).
MAX_SECTION_CHARS = 20_000
#: Section keys of addenda: addendum_1, addendum_2, ...
ADDENDUM_PREFIX = "addendum_"


class ReportError(Exception):
    """A report operation refused; ``kind`` is ``not_draft``, ``stale``, ``invalid``, ``forbidden`` or ``state``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def get(*, session: Session, report_id: int, for_update: bool = False) -> Report | None:
    """The report; ``for_update`` locks its row until the caller commits (PostgreSQL; SQLite
    transactions here take the write lock when they begin), so that a check of its revision or
    status and the write after it are one step against other writers."""
    if for_update:
        return session.get(Report, report_id, with_for_update=True, populate_existing=True)
    return session.get(Report, report_id)


def for_study(*, session: Session, study_id: int) -> Report | None:
    return session.scalars(select(Report).where(Report.study_id == study_id)).first()


def draft_for(*, session: Session, study: Study, template: Template) -> tuple[Report, bool]:
    """The study's report, created from ``template`` if it has none (then True); the study is
    ``dictated``.

    The study's row is locked first (PostgreSQL), so that two first dictations (or two first
    keystrokes on the page) at once create one report: the second waits and then finds the
    first's, and says it did not create it."""
    session.get(Study, study.id, with_for_update=True, populate_existing=True)
    report = for_study(session=session, study_id=study.id)
    created = report is None
    if report is None:
        report = Report(study_id=study.id, status=ReportStatus.DRAFT.value, version=1, revision=1,
                        template=template.name, titles=[[s.key, s.title] for s in template.sections],
                        sections=template.empty_sections(), notes=[], dictation_ids=[])
        session.add(report)
        session.flush()
    if study.status in _BEFORE_DICTATED:
        study.status = StudyStatus.DICTATED.value
    return report, created


def merge_text(existing: str, new: str) -> str:
    """``new`` added to a section's text: an organ subheading's line ("Lungs: ...") goes after
    the same subheading's text when the section has it; the rest is appended."""
    existing, new = existing.strip(), new.strip()
    if not existing:
        return new
    lines = existing.split("\n")
    rest: list[str] = []
    for line in new.split("\n"):
        heading = re.match(r"([A-Z][A-Za-z ]{0,30}):\s*(.*)$", line)
        at = next((n for n, old in enumerate(lines) if heading and old.startswith(heading.group(1) + ":")), None)
        if heading and at is not None:
            lines[at] = f"{lines[at].rstrip()} {heading.group(2)}".rstrip()
        else:
            rest.append(line)
    merged = "\n".join(lines)
    added = "\n".join(rest).strip()
    if not added:
        return merged
    # a new subheading starts its own line; running text continues the last paragraph
    joiner = "\n" if re.match(r"[A-Z][A-Za-z ]{0,30}:", added) else " "
    return f"{merged}{joiner}{added}"


def merge_dictation(*, session: Session, report: Report, dictation_id: str, sections: Mapping[str, str],
                    changes: Sequence[Change], titles: Mapping[str, str], replace: Mapping[str, str] | None = None,
                    refinement: str | None = None) -> bool:
    """Add a refined dictation's sections to a draft; False if it was merged before.

    ``replace`` holds section texts already merged (by the LLM, accepted by the guard);
    ``refinement`` says how the text was refined (``llm`` or ``rules-only: reason``).

    Raises
    ------
    ReportError
        ``not_draft``: the report is signed (a later dictation belongs in an addendum).
    """
    if dictation_id in report.dictation_ids:
        return False
    if report.status != ReportStatus.DRAFT.value:
        raise ReportError("not_draft", f"report {report.id} is {report.status}: only a draft takes dictations")
    merged = dict(report.sections)
    known = [key for key, _ in report.titles]
    new_titles = list(report.titles)
    for key, text in sections.items():
        merged[key] = clean_text((replace or {}).get(key) or merge_text(merged.get(key, ""), text))
        if key not in known:  # a section the template lacks still keeps its text
            new_titles.append([key, titles.get(key, key.replace("_", " ").capitalize())])
            known.append(key)
    report.sections = merged
    report.titles = new_titles
    report.notes = [*report.notes, *({"dictation_id": dictation_id, **c.as_dict()} for c in changes)]
    report.dictation_ids = [*report.dictation_ids, dictation_id]
    if refinement is not None:
        report.refinement = refinement[:300]
    report.revision += 1
    return True


def replace_dictation(*, session: Session, report: Report, dictation_id: str, before: Mapping[str, str],
                      sections: Mapping[str, str], changes: Sequence[Change], titles: Mapping[str, str],
                      revision: int, replace: Mapping[str, str] | None = None,
                      refinement: str | None = None) -> bool:
    """Put a dictation's more accurate text where its earlier text was merged: the report as it
    was ``before`` that merge, with the new ``sections`` merged in; its notes replace the earlier
    text's notes. Only while the report is a draft still at ``revision`` (the one the earlier
    merge left: nobody edited it and no other dictation came since); False otherwise, and
    nothing changes."""
    if dictation_id not in report.dictation_ids or report.status != ReportStatus.DRAFT.value \
            or report.revision != revision:
        return False
    merged = {key: before.get(key, "") for key in report.sections}
    known = [key for key, _ in report.titles]
    new_titles = list(report.titles)
    for key, text in sections.items():
        merged[key] = clean_text((replace or {}).get(key) or merge_text(before.get(key, ""), text))
        if key not in known:
            new_titles.append([key, titles.get(key, key.replace("_", " ").capitalize())])
            known.append(key)
    report.sections = merged
    report.titles = new_titles
    report.notes = [*(n for n in report.notes if n.get("dictation_id") != dictation_id),
                    *({"dictation_id": dictation_id, **c.as_dict()} for c in changes)]
    if refinement is not None:
        report.refinement = refinement[:300]
    report.revision += 1
    return True


def edit(*, session: Session, report: Report, sections: Mapping[str, str], user_id: int | None,
         revision: int | None = None) -> Report:
    """Replace the text of the named sections of a draft.

    Raises
    ------
    ReportError
        ``not_draft`` (signed), ``stale`` (``revision`` is not the report's current one: someone
        or a dictation changed it since it was read), ``invalid`` (unknown section, too long).
    """
    if report.status != ReportStatus.DRAFT.value:
        raise ReportError("not_draft", f"report {report.id} is {report.status}: only a draft can be edited")
    if revision is not None and revision != report.revision:
        raise ReportError("stale", f"report {report.id} is at revision {report.revision}, not {revision}: "
                                   "read it again and reapply the edit")
    known = {key for key, _ in report.titles}
    unknown = sorted(set(sections) - known)
    if unknown:
        raise ReportError("invalid", f"unknown section(s) {', '.join(unknown)}; this report has "
                                     f"{', '.join(key for key, _ in report.titles)}")
    cleaned = {key: clean_text(text).strip() for key, text in sections.items()}
    for key, text in cleaned.items():
        if len(text) > MAX_SECTION_CHARS:
            raise ReportError("invalid", f"section {key} is longer than {MAX_SECTION_CHARS} characters")
    report.sections = {**report.sections, **cleaned}
    report.revision += 1
    report.updated_by = user_id
    return report


#: Who may sign which kind of version: a resident signs preliminary reports only.
SIGNERS = {
    VersionKind.PRELIMINARY: (Role.RADIOLOGIST.value, Role.RESIDENT.value),
    VersionKind.FINAL: (Role.RADIOLOGIST.value,),
    VersionKind.ADDENDUM: (Role.RADIOLOGIST.value,),
}
#: Report status each kind of version leaves, and the study status with it.
_AFTER = {
    VersionKind.PRELIMINARY: (ReportStatus.PRELIMINARY, StudyStatus.PRELIMINARY),
    VersionKind.FINAL: (ReportStatus.FINAL, StudyStatus.FINAL),
    VersionKind.ADDENDUM: (ReportStatus.AMENDED, StudyStatus.FINAL),
}
#: The report statuses each kind of version may follow.
_SIGNABLE_FROM = {
    VersionKind.PRELIMINARY: (ReportStatus.DRAFT.value,),
    VersionKind.FINAL: (ReportStatus.DRAFT.value, ReportStatus.PRELIMINARY.value),
    VersionKind.ADDENDUM: (ReportStatus.FINAL.value, ReportStatus.AMENDED.value),
}


def new_sr_instance_uid() -> str:
    """A DICOM UID under the 2.25 root (PS3.5 B.2: a UUID as a decimal integer), unique without a registry."""
    return f"2.25.{uuid.uuid4().int}"


def versions(*, session: Session, report_id: int) -> list[ReportVersion]:
    return list(session.scalars(select(ReportVersion).where(ReportVersion.report_id == report_id)
                                .order_by(ReportVersion.version)))


def _check_signer(session: Session, kind: VersionKind, user: User, report: Report) -> None:
    # the study's row locked (after the report's, the one order every writer takes): an HL7 cancel
    # cannot land between the check that the study is not cancelled and the signature
    session.get(Study, report.study_id, with_for_update=True, populate_existing=True)
    if user.role not in SIGNERS[kind]:
        raise ReportError("forbidden", f"role '{user.role}' may not sign a {kind.value} version "
                                       f"(needs: {', '.join(SIGNERS[kind])})")
    if report.status not in _SIGNABLE_FROM[kind]:
        wanted = " or ".join(_SIGNABLE_FROM[kind])
        raise ReportError("state", f"report {report.id} is {report.status}: a {kind.value} version needs a "
                                   f"{wanted} report" + (" (corrections go in an addendum)"
                                                         if kind is not VersionKind.ADDENDUM else ""))
    if report.study.status == StudyStatus.CANCELLED.value:
        raise ReportError("state", f"study {report.study.accession_number} is cancelled: its report cannot be signed")


def _new_version(*, session: Session, report: Report, kind: VersionKind, user: User, destinations: Sequence[str],
                 give_up_after: timedelta) -> ReportVersion:
    # a draft is drafted as its first version; every later signature is the next one
    number = report.version if report.status == ReportStatus.DRAFT.value else report.version + 1
    version = ReportVersion(report_id=report.id, version=number, kind=kind.value, result_status=RESULT_STATUS[kind],
                            titles=[list(t) for t in report.titles], sections=dict(report.sections),
                            signed_by=user.id, signer_username=user.username, signer_name=user.display_name,
                            # only a name entered in parts is kept as parts (never a guess)
                            signer_parts=users.person_name(user).as_dict() if user.family_name else None,
                            signed_at=utcnow(), sr_instance_uid=new_sr_instance_uid())
    session.add(version)
    session.flush()
    report_status, study_status = _AFTER[kind]
    report.status, report.version = report_status.value, number
    report.revision += 1
    report.updated_by = user.id
    report.study.status = study_status.value
    outbox.add_for_version(session=session, version=version, study=report.study, destinations=list(destinations),
                           give_up_after=give_up_after)
    return version


def sign(*, session: Session, report: Report, kind: VersionKind, user: User, destinations: Sequence[str],
         give_up_after: timedelta, revision: int | None = None) -> ReportVersion:
    """Sign the report's current text as a preliminary or final version and queue its deliveries
    (one outbox row per destination, in the same transaction).

    Raises
    ------
    ReportError
        ``forbidden`` (the role may not sign this), ``state`` (already final, cancelled study),
        ``stale`` (``revision`` is not the current one), ``invalid`` (nothing to sign).
    """
    if kind is VersionKind.ADDENDUM:
        raise ReportError("invalid", "an addendum is signed with its text (POST .../addenda)")
    _check_signer(session, kind, user, report)
    if revision is not None and revision != report.revision:
        raise ReportError("stale", f"report {report.id} is at revision {report.revision}, not {revision}: "
                                   "read it again before signing")
    if not any(text.strip() for text in report.sections.values()):
        raise ReportError("invalid", f"report {report.id} has no text to sign")
    return _new_version(session=session, report=report, kind=kind, user=user, destinations=destinations,
                        give_up_after=give_up_after)


def add_addendum(*, session: Session, report: Report, text: str, user: User, destinations: Sequence[str],
                 give_up_after: timedelta) -> ReportVersion:
    """Sign an addendum to a final report: a new version holding the whole report and every
    addendum so far (result status C), queued for delivery like any signed version.

    Raises
    ------
    ReportError
        ``forbidden``, ``state`` (the report is not final yet), ``invalid`` (empty or too long).
    """
    _check_signer(session, VersionKind.ADDENDUM, user, report)
    text = clean_text(text).strip()
    if not text:
        raise ReportError("invalid", "an addendum needs text")
    if len(text) > MAX_SECTION_CHARS:
        raise ReportError("invalid", f"an addendum is longer than {MAX_SECTION_CHARS} characters")
    number = sum(1 for key, _ in report.titles if key.startswith(ADDENDUM_PREFIX)) + 1
    key = f"{ADDENDUM_PREFIX}{number}"
    when = utcnow().strftime("%Y-%m-%d %H:%M UTC")
    report.titles = [*report.titles, [key, f"Addendum {number} ({when}, {user.display_name or user.username})"]]
    report.sections = {**report.sections, key: text}
    return _new_version(session=session, report=report, kind=VersionKind.ADDENDUM, user=user,
                        destinations=destinations, give_up_after=give_up_after)
