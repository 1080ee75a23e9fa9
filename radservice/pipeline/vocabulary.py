"""Procedure-aware prompting: the study's modality and procedure pick radiology term lists.

Admins add terms without code: ``config/vocabulary/*.txt``, one term per line, ``#`` starts a
comment, and a ``match:`` line says when the file applies (modality codes such as ``CT`` or
words of the procedure text such as ``chest``; ``*`` always).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Whisper reads at most 224 prompt tokens; about four characters a token, with room to spare.
MAX_PROMPT_CHARS = 700


@dataclass(frozen=True)
class TermList:
    name: str
    matches: frozenset[str]
    terms: tuple[str, ...]

    def applies(self, modality: str, procedure_words: set[str]) -> bool:
        return "*" in self.matches or modality.upper() in self.matches or bool(self.matches & procedure_words)


def load_vocabulary(folder: Path) -> list[TermList]:
    """Every term list in ``folder`` (sorted by file name); an absent folder means none."""
    lists: list[TermList] = []
    if not folder.is_dir():
        return lists
    for path in sorted(folder.glob("*.txt")):
        matches: set[str] = set()
        terms: list[str] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.lower().startswith("match:"):
                for token in line[6:].split(","):
                    token = token.strip()
                    matches.add(token.upper() if token.isupper() else token.lower())
            else:
                terms.append(line)
        lists.append(TermList(path.stem, frozenset(matches), tuple(terms)))
    return lists


def load_lexicon(path: Path) -> list[str]:
    """The site's radiology lexicon (one term per line, ``#`` comments): terms a misheard word
    may be corrected to in any study, after the study's own vocabulary. Never in the prompt
    (Whisper hears 224 prompt tokens). An absent file means none."""
    if not path.is_file():
        return []
    terms = (raw.split("#", 1)[0].strip() for raw in path.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(t for t in terms if t))


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


#: Short words of procedure texts that are English, not abbreviations (CT, MR, US, RUQ stay upper-case).
_SHORT_WORDS = {"AND", "AT", "FOR", "IN", "NO", "OF", "ON", "OR", "THE", "TO", "W", "WO"}


def _procedure_title(procedure: str) -> str:
    """RIS procedure texts come upper-case; a report writes "CT chest with contrast"."""
    text = " ".join(procedure.split())
    if text.isupper():
        text = " ".join(w if len(w) <= 3 and w.isalpha() and w not in _SHORT_WORDS else w.lower()
                        for w in text.split())
    return text[:1].upper() + text[1:]


def applicable(vocabulary: list[TermList], *, modality: str, procedure: str) -> list[TermList]:
    """The term lists that apply to a study: most specific (procedure words) first, general last."""
    words = _words(procedure)
    chosen = [tl for tl in vocabulary if tl.applies(modality, words)]
    chosen.sort(key=lambda tl: ("*" in tl.matches, not (tl.matches & words)))
    return chosen


def study_terms(vocabulary: list[TermList], *, modality: str, procedure: str) -> list[str]:
    """Every term that applies to a study (for correcting and guarding its text)."""
    return [t for tl in applicable(vocabulary, modality=modality, procedure=procedure) for t in tl.terms]


def build_prompt(vocabulary: list[TermList], *, modality: str, procedure: str) -> str:
    """An initial prompt in the shape of a report: the procedure, then the terms that apply.

    Terms of the most specific lists (procedure words) come first, general ones last, and the
    prompt stops at ``MAX_PROMPT_CHARS``.
    """
    chosen = applicable(vocabulary, modality=modality, procedure=procedure)
    head = f"{_procedure_title(procedure)}. Findings: " if procedure.strip() else "Findings: "
    seen: set[str] = set()
    terms: list[str] = []
    length = len(head)
    for term_list in chosen:
        for term in term_list.terms:
            key = term.lower()
            if key in seen:
                continue
            if length + len(term) + 2 > MAX_PROMPT_CHARS:
                return head + ", ".join(terms) + "."
            seen.add(key)
            terms.append(term)
            length += len(term) + 2
    return head + ", ".join(terms) + ("." if terms else "")
