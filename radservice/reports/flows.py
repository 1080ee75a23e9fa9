"""The ``draft_report`` job: a transcribed dictation refined by the rules and merged into its
study's report (created from the study's template on the first dictation)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from radservice.audit import service as audit
from radservice.config import Settings
from radservice.db.session import session_scope
from radservice.dictation import service as dictations
from radservice.dictation.flows import dictation_for_job
from radservice.dictation.models import Dictation, FinalPass
from radservice.jobs.worker import JobContext, PermanentJobError
from radservice.pipeline.compose import Templates
from radservice.pipeline.refine.changes import Change
from radservice.pipeline.refine.flags import flag_words, unheard_flags
from radservice.pipeline.refine.guard import Guard
from radservice.pipeline.refine.llm import DEFAULT_PROMPTS, LlmRefiner, Prompts, TextModel
from radservice.pipeline.refine.macros import load_macros
from radservice.pipeline.refine.rules import Rules
from radservice.pipeline.vocabulary import TermList, load_lexicon, load_vocabulary, study_terms
from radservice.reports import service as reports
from radservice.reports.models import Report, ReportStatus

log = logging.getLogger("radservice.reports")

def without_reasons(refinement: str) -> str:
    """The refinement as the audit trail and the job's result keep it: its kind (``rules``,
    ``llm``, ``rules-only``) and the LLM steps that fell back, never the reasons (the guard's name
    findings, numbers and sides: report text). Each fallback reads "step: reason" and is joined
    with "; " (LlmStep.refinement); a step's name is the known text before its first colon."""
    kind, _, rest = refinement.partition(":")
    if not rest:
        return kind
    steps = [part.split(":", 1)[0].strip() for part in rest.split("; ")]
    return f"{kind}: {', '.join(s for s in dict.fromkeys(steps) if s in _STEPS)}"


#: The LLM steps' names, as LlmRefiner names them in a fallback reason.
_STEPS = ("merge findings", "clean impression", "suggest impression")


class DraftFlow:
    """Refine one dictation's transcript (rules, then the LLM behind the guard) and merge it into
    the report draft.

    The LLM is asked outside any database transaction; if the report changed meanwhile (an edit,
    another dictation), the LLM's text is dropped for the rules' merge into the current text.
    """

    def __init__(self, *, templates: Templates, vocabulary: list[TermList], macros: dict[str, str],
                 model: TextModel | None = None, prompts: Prompts | None = None,
                 lexicon: list[str] | None = None) -> None:
        self.templates = templates
        self.lexicon = lexicon or []
        self.vocabulary = vocabulary
        self.macros = macros
        self.model = model
        self.prompts = prompts or Prompts(**DEFAULT_PROMPTS)

    @classmethod
    def from_settings(cls, settings: Settings, model: TextModel | None = None) -> DraftFlow:
        report = settings.report
        return cls(templates=Templates.load(report.templates_dir),
                   vocabulary=load_vocabulary(settings.whisper.vocabulary_dir),
                   macros=load_macros(report.macros_file), model=model,
                   prompts=Prompts.load(settings.llm.prompts_dir), lexicon=load_lexicon(report.lexicon_file))

    @staticmethod
    def on_failed(session: Session, payload: dict[str, Any], reason: str) -> None:
        """The draft job failed for good: the dictation says its text is not in the report (the
        transcript stays on it); for the accurate pass, the live text stays and it says why."""
        dictation_id = str(payload.get("dictation_id", ""))
        if payload.get("final"):
            dictations.fail_final_pass(session=session, dictation_id=dictation_id,
                                       reason=f"the accurate text could not be put in the report: {reason}"[:500])
            return
        dictation = session.get(Dictation, dictation_id)
        if dictation is not None:
            dictation.error = f"not put in the report: {reason}"[:500]

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        dictation_id = str(ctx.job.payload.get("dictation_id", ""))
        # the accurate pass after a live dictation: its text replaces the live text already merged
        final = bool(ctx.job.payload.get("final"))
        try:
            return self._draft(ctx, dictation_id, final)
        except Exception as exc:
            if final and ctx.job.attempts >= ctx.job.max_attempts:  # the live text stays: say so
                with session_scope(ctx.sessions) as session:
                    ctx.hold(session)
                    dictations.fail_final_pass(session=session, dictation_id=dictation_id, reason=(
                        f"the accurate text could not be put in the report: {type(exc).__name__}"))
            raise

    def _draft(self, ctx: JobContext, dictation_id: str, final: bool) -> dict[str, Any]:
        with session_scope(ctx.sessions) as session:
            ctx.hold(session)
            dictation = dictation_for_job(session, dictation_id)
            if final and dictation.final_pass != FinalPass.PENDING.value:  # done before (a retry)
                return {"dictation_id": dictation_id, "merged": False, "final_pass": dictation.final_pass}
            if not dictation.transcript:
                raise PermanentJobError(f"dictation {dictation_id} has no transcript to put in a report")
            study = dictation.study
            template = self.templates.pick(modality=study.modality, procedure_code=study.procedure_code,
                                           procedure_text=study.procedure_text)
            terms = study_terms(self.vocabulary, modality=study.modality, procedure=study.procedure_text)
            started = time.perf_counter()
            refined = Rules(terms=terms, macros=self.macros, lexicon=self.lexicon).refine(
                dictation.transcript, section=dictation.section, template=template, words=dictation.words or [])
            rules_ms = (time.perf_counter() - started) * 1000
            # words to check (unsure sides and negations, a side against the order's): flagged, never changed
            flags = flag_words(dictation.words or [], procedure=study.procedure_text or "")
            flags += unheard_flags(dictation.unheard or [])  # speech that came out as no text
            report, _ = reports.draft_for(session=session, study=study, template=template)
            report_id, revision = report.id, report.revision
            already = dictation_id in report.dictation_ids
            replacing = final and already and report.revision == dictation.draft_revision
            current = dict(dictation.draft_before or {}) if replacing else dict(report.sections)
        llm = self._llm_step(refined.sections, current, terms) if not already or replacing else None
        notes = list(refined.changes) + [flag.as_change() for flag in flags]
        titles = {s.key: s.title for s in template.sections}
        with session_scope(ctx.sessions) as session:
            ctx.hold(session)
            # both rows locked: the revision and status checked here are the ones written over
            locked_report = reports.get(session=session, report_id=report_id, for_update=True)
            locked = session.get(Dictation, dictation_id, with_for_update=True, populate_existing=True)
            if locked_report is None or locked is None:
                raise PermanentJobError(f"dictation {dictation_id} or its report no longer exists")
            report, dictation = locked_report, locked
            if final and dictation.final_pass != FinalPass.PENDING.value:
                return {"dictation_id": dictation_id, "merged": False, "final_pass": dictation.final_pass}
            replace: dict[str, str] = {}
            if llm is not None:
                if report.revision == revision:
                    replace = llm.replace
                else:
                    notes.append(Change("llm", "report changed while the LLM worked", "the rules' merge is kept"))
                notes.extend(llm.notes)
            if dictation_id in report.dictation_ids and final:
                merged = self._replace(session, report, dictation, refined.sections, notes, titles, replace,
                                       llm.refinement if llm and replace else None)
            else:
                before = dict(report.sections)
                try:
                    merged = reports.merge_dictation(session=session, report=report, dictation_id=dictation_id,
                                                     sections=refined.sections, changes=notes, replace=replace,
                                                     titles=titles, refinement=llm.refinement if llm else None)
                except reports.ReportError as exc:
                    if final:  # signed before any text of this dictation went in: nothing changes
                        dictation.final_pass = FinalPass.KEPT.value
                        audit.record(session=session, actor="worker", action="report.drafted",
                                     entity_type="report", entity_id=str(report.id),
                                     detail={"dictation_id": dictation_id, "merged": False,
                                             "final_pass": dictation.final_pass, "refused": exc.kind})
                        return {"dictation_id": dictation_id, "merged": False, "final_pass": dictation.final_pass}
                    raise PermanentJobError(str(exc)) from None
                if merged and final:
                    dictation.final_pass = FinalPass.APPLIED.value
                elif merged:
                    # an accurate pass or a transcription again replaces this text while the report
                    # stays at this revision
                    dictation.draft_before, dictation.draft_revision = before, report.revision
            audit.record(session=session, actor="worker", action="report.drafted", entity_type="report",
                         entity_id=str(report.id), detail={"dictation_id": dictation_id, "merged": merged,
                                                           "changes": len(refined.changes), "flags": len(flags),
                                                           "refinement": without_reasons(report.refinement),
                                                           "final_pass": dictation.final_pass})
            refinement, final_pass = report.refinement, dictation.final_pass
        # counts only: no report text (nor the guard's reasons, which name findings) in the log
        log.info("dictation %s %s report %d (template %s): %d rule changes in %.1f ms, %d words flagged; "
                 "refinement %s%s", dictation_id, "merged into" if merged else "already in", report_id, template.name,
                 len(refined.changes), rules_ms, len(flags), refinement.split(":")[0],
                 f"; accurate pass {final_pass}" if final else "")
        return {"report_id": report_id, "dictation_id": dictation_id, "merged": merged,
                "sections": sorted(refined.sections), "changes": len(refined.changes), "flags": len(flags),
                "refinement": without_reasons(refinement), "final_pass": final_pass}

    @staticmethod
    def _replace(session: Session, report: Report, dictation: Dictation, sections: dict[str, str],
                 notes: list[Change], titles: dict[str, str], replace: dict[str, str],
                 refinement: str | None) -> bool:
        """The accurate text in place of the live text merged before, if the report has not
        changed since; else the live text stays (the radiologist's edits win) with a note."""
        if dictation.draft_revision is None or dictation.draft_before is None:
            applied = False
        else:
            applied = reports.replace_dictation(session=session, report=report, dictation_id=dictation.id,
                                                before=dictation.draft_before, sections=sections, changes=notes,
                                                titles=titles, revision=dictation.draft_revision, replace=replace,
                                                refinement=refinement)
        if applied:  # a later transcription may replace this text again, while nothing else changes
            dictation.draft_revision = report.revision
            dictation.final_pass = FinalPass.APPLIED.value
        else:
            dictation.draft_before, dictation.draft_revision = None, None  # the report moved on
            dictation.final_pass = FinalPass.KEPT.value
            if report.status == ReportStatus.DRAFT.value:  # a note, not text: the revision stays
                report.notes = [*report.notes, {"dictation_id": dictation.id, **Change(
                    "final pass", "the report changed before the accurate transcript was ready",
                    "the live text is kept; the accurate transcript is on the dictation").as_dict()}]
        return applied

    def _llm_step(self, sections: dict[str, str], current: dict[str, str], terms: list[str]) -> LlmStep:
        """The LLM's merge of the findings and cleaning of the impression, each behind the guard."""
        refiner = LlmRefiner(self.model, self.prompts, Guard(terms))
        step = LlmStep()
        for key, text in sections.items():
            existing = current.get(key, "")
            if key == "impression":
                outcome = refiner.clean_impression(text)
                step.replace[key] = reports.merge_text(existing, outcome.text)
            elif key == "findings" and existing.strip():
                outcome = refiner.merge_findings(existing, text, rules_text=reports.merge_text(existing, text))
                step.replace[key] = outcome.text
            else:
                continue  # a first findings dictation has nothing to merge into: the rules' text
            step.notes.extend(outcome.notes)
            if not outcome.by_llm:
                step.failures.append(outcome.reason)
        return step


@dataclass
class LlmStep:
    """What the LLM step decided: the section texts to use, its notes, why it fell back."""

    replace: dict[str, str] = field(default_factory=dict)
    notes: list[Change] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def refinement(self) -> str | None:
        """``llm``, ``rules-only: reason``, or None when the LLM had nothing to do."""
        if not self.replace:
            return None
        return f"rules-only: {'; '.join(self.failures)}" if self.failures else "llm"
