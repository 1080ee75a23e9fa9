"""LLM refinement behind the guard: merge a findings dictation into the findings, clean an
impression, suggest an impression. The model is reached through an adapter (integrations/ollama);
whatever it answers, only what the guard accepts is kept, and every failure leaves the rules'
text with the reason said.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from radservice.pipeline.refine.changes import Change
from radservice.pipeline.refine.guard import Guard

log = logging.getLogger("radservice.refine")


class LlmUnavailable(Exception):
    """The model gave no usable answer (down, slow, unknown model, error status, empty)."""


class TextModel(Protocol):
    """A chat model behind an adapter: one system and one user message in, the answer out.

    Raises ``LlmUnavailable`` with a reason a radiologist or admin can read."""

    name: str

    def complete(self, *, system: str, user: str) -> str: ...


#: Used when the prompts folder lacks a file (admins edit config/prompts/*.txt).
DEFAULT_PROMPTS = {
    "merge_findings": (
        "You edit the findings section of a radiology report. Merge the NEW DICTATION into the CURRENT "
        "FINDINGS: put each sentence with the organ it describes, fix grammar, and remove repetition. "
        "Never add, remove or change a finding, a side (left, right, bilateral), a negation or a number "
        "with its unit. Answer with the findings text only."),
    "clean_impression": (
        "You edit the impression of a radiology report. Fix grammar and punctuation and make it concise. "
        "Never add, remove or change a finding, a side (left, right, bilateral), a negation or a number "
        "with its unit. Answer with the impression text only."),
    "suggest_impression": (
        "You write the impression of a radiology report from its findings: the important findings first, "
        "one per sentence. Use only findings that are in the text, with their sides, negations and "
        "measurements unchanged. Answer with the impression text only."),
}


@dataclass(frozen=True)
class Prompts:
    merge_findings: str
    clean_impression: str
    suggest_impression: str

    @classmethod
    def load(cls, folder: Path) -> Prompts:
        """``{folder}/{name}.txt`` for each prompt, the built-in text where a file is missing."""
        texts = {}
        for name, default in DEFAULT_PROMPTS.items():
            path = folder / f"{name}.txt"
            texts[name] = path.read_text(encoding="utf-8").strip() if path.is_file() else default
        return cls(**texts)


@dataclass
class Outcome:
    """The text to keep, whether the LLM's edit is in it, and the notes that say what happened."""

    text: str
    by_llm: bool
    reason: str = ""
    notes: list[Change] = field(default_factory=list)
    seconds: float = 0.0


class LlmRefiner:
    """The LLM steps of refinement for one study (its vocabulary feeds the guard).

    Parameters
    ----------
    model
        The adapter; None when ``llm.enabled`` is false (every step keeps the rules' text).
    prompts
        The instructions of each step.
    guard
        The study's guard.
    """

    def __init__(self, model: TextModel | None, prompts: Prompts, guard: Guard) -> None:
        self.model = model
        self.prompts = prompts
        self.guard = guard

    def merge_findings(self, current: str, new: str, *, rules_text: str) -> Outcome:
        """``rules_text`` (the rules' merge of ``new`` into ``current``), or the LLM's better one."""
        user = f"CURRENT FINDINGS:\n{current}\n\nNEW DICTATION:\n{new}"
        return self._edit(self.prompts.merge_findings, user, rules_text, step="merge findings")

    def clean_impression(self, text: str) -> Outcome:
        return self._edit(self.prompts.clean_impression, text, text, step="clean impression")

    def suggest_impression(self, findings: str) -> Outcome:
        """An impression written from the findings; checked against the findings' facts, so it
        may leave findings out (``subset``) but never change or invent one."""
        return self._edit(self.prompts.suggest_impression, findings, findings, step="suggest impression",
                          subset=True)

    def _edit(self, system: str, user: str, before: str, *, step: str, subset: bool = False) -> Outcome:
        if self.model is None:
            return Outcome(before, False, "LLM refinement is off (llm.enabled = false)")
        started = time.perf_counter()
        try:
            answer = self.model.complete(system=system, user=user)
        except LlmUnavailable as exc:
            log.warning("LLM %s: %s; the rules' text stays", step, exc)
            return Outcome(before, False, f"{step}: {exc}", [Change("llm unavailable", step, str(exc))],
                           time.perf_counter() - started)
        seconds = time.perf_counter() - started
        verdict = self.guard.check(before, answer, instructions=system, subset=subset)
        if not verdict.accepted:
            reason = "; ".join(verdict.reasons)
            # the reasons name findings and numbers: only their kinds go to the log
            kinds = ", ".join(sorted({r.split()[0] for r in verdict.reasons}))
            log.info("LLM %s refused by the guard (%s)", step, kinds)
            return Outcome(before, False, f"{step}: the guard refused the edit ({reason})",
                           [Change("llm refused by guard", step, reason)], seconds)
        notes = [Change("llm", before, verdict.text)] if verdict.text != before else []
        return Outcome(verdict.text, True, "", notes, seconds)
