"""The ``draft_report`` job: a transcribed dictation refined by the rules and merged into its
study's report (created from the study's template on the first dictation)."""

from __future__ import annotations

import logging
import time
from typing import Any

from radservice.audit import service as audit
from radservice.config import Settings
from radservice.db.session import session_scope
from radservice.dictation.models import Dictation
from radservice.jobs.worker import JobContext, PermanentJobError
from radservice.pipeline.compose import Templates
from radservice.pipeline.refine.macros import load_macros
from radservice.pipeline.refine.rules import Rules
from radservice.pipeline.vocabulary import TermList, load_vocabulary
from radservice.reports import service as reports

log = logging.getLogger("radservice.reports")

DRAFT_REPORT = "draft_report"


def study_terms(vocabulary: list[TermList], *, modality: str, procedure: str) -> list[str]:
    """The terms of the lists that apply to a study (as for its transcription prompt)."""
    words = {w.lower() for w in procedure.split()}
    return [t for term_list in vocabulary if term_list.applies(modality, words) for t in term_list.terms]


class DraftFlow:
    """Refine one dictation's transcript and merge it into the report draft."""

    def __init__(self, *, templates: Templates, vocabulary: list[TermList], macros: dict[str, str]) -> None:
        self.templates = templates
        self.vocabulary = vocabulary
        self.macros = macros

    @classmethod
    def from_settings(cls, settings: Settings) -> DraftFlow:
        report = settings.report
        return cls(templates=Templates.load(report.templates_dir),
                   vocabulary=load_vocabulary(settings.whisper.vocabulary_dir),
                   macros=load_macros(report.macros_file))

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        dictation_id = str(ctx.job.payload.get("dictation_id", ""))
        with session_scope(ctx.sessions) as session:
            dictation = session.get(Dictation, dictation_id)
            if dictation is None:
                raise PermanentJobError(f"dictation {dictation_id} does not exist")
            if not dictation.transcript:
                raise PermanentJobError(f"dictation {dictation_id} has no transcript to put in a report")
            study = dictation.study
            template = self.templates.pick(modality=study.modality, procedure_code=study.procedure_code,
                                           procedure_text=study.procedure_text)
            terms = study_terms(self.vocabulary, modality=study.modality, procedure=study.procedure_text)
            started = time.perf_counter()
            refined = Rules(terms=terms, macros=self.macros).refine(dictation.transcript, section=dictation.section,
                                                                    template=template)
            rules_ms = (time.perf_counter() - started) * 1000
            report = reports.draft_for(session=session, study=study, template=template)
            try:
                merged = reports.merge_dictation(session=session, report=report, dictation_id=dictation_id,
                                                 sections=refined.sections, changes=refined.changes,
                                                 titles={s.key: s.title for s in template.sections})
            except reports.ReportError as exc:
                raise PermanentJobError(str(exc)) from None
            audit.record(session=session, actor="worker", action="report.drafted", entity_type="report",
                         entity_id=str(report.id), detail={"dictation_id": dictation_id, "merged": merged,
                                                           "changes": len(refined.changes)})
            report_id = report.id
        # counts only: no report text in the log
        log.info("dictation %s %s report %d (template %s): %d rule changes in %.1f ms", dictation_id,
                 "merged into" if merged else "already in", report_id, template.name, len(refined.changes),
                 rules_ms)
        return {"report_id": report_id, "dictation_id": dictation_id, "merged": merged,
                "sections": sorted(refined.sections), "changes": len(refined.changes)}

