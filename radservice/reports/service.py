"""Report operations: the draft a study's first dictation creates, dictations merged into it,
edits by the radiologist. Keyword-only, on the caller's session; the caller commits."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from radservice.pipeline.compose import Template
from radservice.pipeline.refine.changes import Change
from radservice.reports.models import Report, ReportStatus
from radservice.worklist.models import Study, StudyStatus

#: The job that refines a stored transcript and merges it into the report (reports.flows.DraftFlow).
DRAFT_REPORT = "draft_report"
#: Study statuses a first dictation moves on to ``dictated``.
_BEFORE_DICTATED = (StudyStatus.SCHEDULED.value, StudyStatus.IN_PROGRESS.value)
#: Most text one section may hold (a pasted book is a mistake, not a report).
MAX_SECTION_CHARS = 20_000


class ReportError(Exception):
    """A report operation refused; ``kind`` is ``not_draft``, ``stale`` or ``invalid``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def get(*, session: Session, report_id: int) -> Report | None:
    return session.get(Report, report_id)


def for_study(*, session: Session, study_id: int) -> Report | None:
    return session.scalars(select(Report).where(Report.study_id == study_id)).first()


def draft_for(*, session: Session, study: Study, template: Template) -> Report:
    """The study's report, created from ``template`` if it has none; the study is ``dictated``."""
    report = for_study(session=session, study_id=study.id)
    if report is None:
        report = Report(study_id=study.id, status=ReportStatus.DRAFT.value, version=1, revision=1,
                        template=template.name, titles=[[s.key, s.title] for s in template.sections],
                        sections=template.empty_sections(), notes=[], dictation_ids=[])
        session.add(report)
        session.flush()
    if study.status in _BEFORE_DICTATED:
        study.status = StudyStatus.DICTATED.value
    return report


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
        merged[key] = (replace or {}).get(key) or merge_text(merged.get(key, ""), text)
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
    for key, text in sections.items():
        if len(text) > MAX_SECTION_CHARS:
            raise ReportError("invalid", f"section {key} is longer than {MAX_SECTION_CHARS} characters")
    report.sections = {**report.sections, **{k: v.strip() for k, v in sections.items()}}
    report.revision += 1
    report.updated_by = user_id
    return report
