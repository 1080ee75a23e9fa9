"""The deterministic rules, in order: spoken commands and sections, site macros, vocabulary
correction, numbers and units, sentence capitals. Always on, no network; every change they
make is returned as a note (rule, before, after).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from radservice.pipeline.compose import Template
from radservice.pipeline.refine import spoken
from radservice.pipeline.refine.changes import Change
from radservice.pipeline.refine.macros import expand_macros
from radservice.pipeline.refine.numbers import written_numbers
from radservice.pipeline.refine.terms import TermCorrector


@dataclass
class Refined:
    """Section key -> refined text (in the order dictated), and what the rules changed."""

    sections: dict[str, str]
    changes: list[Change] = field(default_factory=list)


_SENTENCE_START = re.compile(r"(^|[.?!]\s+|\n\s*)([a-z])")
_SUBHEADING_TEXT = re.compile(r"(^[A-Z][A-Za-z ]{0,30}:\s+)([a-z])", re.M)


def capitalise(text: str) -> tuple[str, list[Change]]:
    """A capital at the start of every sentence, line and organ subheading's text."""
    changes: list[Change] = []

    def upper(m: re.Match[str]) -> str:
        word = re.match(r"[a-z]+", m.string[m.start(2):])
        if word:
            changes.append(Change("sentence capitals", word.group(0), word.group(0).capitalize()))
        return m.group(1) + m.group(2).upper()

    text = _SENTENCE_START.sub(upper, text)
    return _SUBHEADING_TEXT.sub(upper, text), changes


def tidy(text: str) -> str:
    """Spacing: one space between words, none before punctuation, at most one blank line."""
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([.,;:?!)])", r"\1", text)
    text = re.sub(r"([.,;:?!])(?=[A-Za-z(])", r"\1 ", text)
    text = re.sub(r"\( +", "(", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


#: A word heard with at least this probability every time is not corrected (tiny.en: a clearly said
#: common word 0.9 and more; the misheard parts of terms were below it on the tuning set).
SURE_P = 0.9


def sure_words(words: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Words (lower case, letters only) heard with probability >= ``SURE_P`` wherever they occur."""
    seen: dict[str, bool] = {}
    for w in words:
        key = re.sub(r"[^a-z'-]", "", str(w.get("word", "")).lower())
        if key:
            seen[key] = seen.get(key, True) and float(w.get("probability", 0.0)) >= SURE_P
    return frozenset(k for k, ok in seen.items() if ok)


class Rules:
    """The rules for one study: its vocabulary, the site's macros.

    Parameters
    ----------
    terms
        The vocabulary terms that apply to the study (misheard phrases are matched to them).
    macros
        The site's macros (name -> text).
    lexicon
        The site's radiology lexicon: more terms to match, for every study.
    """

    def __init__(self, *, terms: Iterable[str] = (), macros: dict[str, str] | None = None,
                 lexicon: Iterable[str] = ()) -> None:
        self.corrector = TermCorrector(terms, lexicon=lexicon)
        self.macros = macros or {}

    def refine(self, transcript: str, *, section: str, template: Template,
               words: Sequence[Mapping[str, Any]] = ()) -> Refined:
        """A transcript as report text, split into the template's sections.

        ``section`` is where the dictation starts; spoken headings ("impression colon") move on.
        ``words`` are the transcript's words with their probabilities: a word the recogniser was
        sure of everywhere it was heard is never corrected.
        """
        sure = sure_words(words)
        subheadings = [h for s in template.sections for h in s.subheadings]
        parsed, changes = spoken.parse(transcript, section=section, headings=template.headings(),
                                       subheadings=subheadings)
        sections: dict[str, str] = {}
        for key, text in parsed.items():
            for step in (lambda t: expand_macros(t, self.macros), lambda t: self.corrector.correct(t, sure=sure),
                         written_numbers, capitalise):
                text, made = step(text)
                changes.extend(made)
            sections[key] = tidy(text)
        return Refined(sections, changes)
