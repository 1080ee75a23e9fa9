"""Spoken commands: punctuation and layout said aloud, "scratch that", and section switches.

Whisper punctuates on its own. When a dictation speaks its punctuation ("... lobe period"), the
spoken marks are the radiologist's and Whisper's guesses are noise ("period, as a small"), so
Whisper's marks are dropped; a dictation that speaks none keeps Whisper's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from radservice.pipeline.refine.changes import Change

#: Spoken phrase (lower-case words) -> what it writes.
MARKS: dict[tuple[str, ...], str] = {
    ("period",): ".", ("full", "stop"): ".", ("comma",): ",", ("colon",): ":", ("semicolon",): ";",
    ("semi", "colon"): ";", ("question", "mark"): "?", ("exclamation", "mark"): "!",
    ("new", "line"): "\n", ("next", "line"): "\n", ("new", "paragraph"): "\n\n", ("next", "paragraph"): "\n\n",
    ("open", "parenthesis"): "(", ("open", "paren"): "(", ("open", "bracket"): "(",
    ("close", "parenthesis"): ")", ("close", "paren"): ")", ("close", "bracket"): ")",
    ("hyphen",): "-",
}
SCRATCH = ("scratch", "that")
_LONGEST = max(len(k) for k in MARKS)
_TOKEN = re.compile(r"^([\"'(\[]*)(.*?)([.,;:!?\"')\]]*)$")
_SENTENCE_END = ".?!"


@dataclass(frozen=True)
class Token:
    lead: str
    core: str
    trail: str

    @property
    def key(self) -> str:
        return re.sub(r"[^a-z0-9]", "", self.core.lower())


#: A spoken mark Whisper joined to the word before ("None-period,"): two words.
_JOINED_MARK = re.compile(r"(?<=[A-Za-z])-(?=(?:period|comma)\b)", re.I)


def tokenize(text: str) -> list[Token]:
    tokens = []
    for raw in _JOINED_MARK.sub(" ", text).split():
        match = _TOKEN.match(raw)
        assert match is not None  # the pattern matches any string
        lead, core, trail = match.groups()
        if not core:  # punctuation alone: keep it as trailing punctuation of nothing
            core, trail = "", lead + trail
            lead = ""
        tokens.append(Token(lead, core, trail))
    return tokens


def _mark_at(tokens: Sequence[Token], i: int) -> tuple[str, int] | None:
    """The spoken mark starting at token ``i`` and how many tokens it takes."""
    for n in range(_LONGEST, 0, -1):
        phrase = tuple(t.key for t in tokens[i:i + n])
        if len(phrase) == n and phrase in MARKS:
            return MARKS[phrase], n
    return _misheard_paragraph(tokens, i)


#: What "new paragraph" is heard as, besides itself (read on the tuning sets): "new" (or "next",
#: "now", "no") and one of these words, or two that join into one ("para draft").
_PARAGRAPH_LEADS = frozenset({"new", "next", "no", "now"})
_PARAGRAPH_HEARD = frozenset({"paragraphs", "parabola", "paradraft", "paradraff", "parodraft", "peridraft",
                              "paradox", "paragraf", "paragraft", "paragrass"})


def _misheard_paragraph(tokens: Sequence[Token], i: int) -> tuple[str, int] | None:
    """A misheard "new paragraph": one of the known mishearings, and only where a sentence or
    heading follows (the heard word ends with a mark, or the next word has a capital). "no" only
    with "paragraph(s)" itself: a negation is never taken for a command on a guess."""
    if i + 1 >= len(tokens) or tokens[i].key not in _PARAGRAPH_LEADS or tokens[i].trail:
        return None
    for n in (2, 3):
        words = tokens[i + 1:i + n]
        if len(words) < n - 1 or any(t.trail for t in words[:-1]):
            return None
        heard = "".join(t.key for t in words)
        last = i + n - 1
        boundary = bool(set(tokens[last].trail) & set(".,:;")) or last + 1 == len(tokens) \
            or tokens[last + 1].core[:1].isupper()
        allowed = heard in ("paragraph", "paragraphs") if tokens[i].key == "no" else heard in _PARAGRAPH_HEARD
        if boundary and allowed:
            return "\n\n", n
    return None


class _Section:
    """Text of one section as it is built, token by token."""

    def __init__(self) -> None:
        self.text = ""
        self.glue = False  # the next word joins without a space (after "(")

    def word(self, word: str) -> None:
        if self.text and not self.text.endswith(("\n", " ")) and not self.glue:
            self.text += " "
        self.text += word
        self.glue = False

    def mark(self, mark: str) -> None:
        if mark in ("\n", "\n\n"):
            self.text = self.text.rstrip(" ")
            if self.text:
                self.text = self.text.rstrip("\n") + mark
        elif mark == "(":
            self.word("(")
            self.glue = True
        elif mark == "-":
            self.text = self.text.rstrip(" ") + "-"
            self.glue = True
        else:
            stripped = self.text.rstrip(" ")
            if mark != ")":
                # a spoken mark replaces whatever mark is already there ("lobe, period")
                stripped = stripped.rstrip(".,;:")
            self.text = stripped + mark

    def at_sentence_start(self) -> bool:
        stripped = self.text.rstrip(" ")
        return not stripped or stripped[-1] in _SENTENCE_END + ":\n"

    def scratch(self) -> str:
        """Remove the sentence being dictated, or the last one if none is; returns what went."""
        stripped = self.text.rstrip()
        body = stripped[:-1] if stripped and stripped[-1] in _SENTENCE_END else stripped
        cut = max(body.rfind(c) for c in _SENTENCE_END + "\n:")
        removed = stripped[cut + 1:]
        self.text = stripped[:cut + 1] + (" " if cut >= 0 and stripped[cut] != "\n" else "")
        if cut < 0:
            self.text = ""
        return removed.strip()


def parse(text: str, *, section: str, headings: Mapping[tuple[str, ...], str],
          subheadings: Sequence[str] = ()) -> tuple[dict[str, str], list[Change]]:
    """Split a transcript into section texts, applying spoken punctuation and commands.

    Parameters
    ----------
    text
        The transcript as Whisper wrote it.
    section
        Where the dictation starts (the section the radiologist dictated into).
    headings
        Spoken heading (lower-case words) -> section key: "impression" followed by a colon,
        or said as a sentence of its own, switches to that section.
    subheadings
        Organ headings within a section ("lungs colon" starts a "Lungs:" line).
    """
    tokens = tokenize(text)
    spoken_marks = any(_mark_at(tokens, i) for i in range(len(tokens)))
    changes: list[Change] = []
    sections: dict[str, _Section] = {section: _Section()}
    current = sections[section]
    subs = {tuple(s.lower().split()): s for s in subheadings}
    longest_heading = max((len(h) for h in [*headings, *subs]), default=1)
    dropped_mark = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if tuple(t.key for t in tokens[i:i + 2]) == SCRATCH:
            removed = current.scratch()
            changes.append(Change("scratch that", f"{removed} scratch that".strip(), ""))
            i += 2
            continue
        found = _mark_at(tokens, i)
        if found:
            mark, n = found
            current.mark(mark)
            said = " ".join(t.core for t in tokens[i:i + n])
            changes.append(Change("spoken punctuation", said, mark.replace("\n", "\\n")))
            i += n
            dropped_mark = False
            continue
        if current.at_sentence_start():
            switched = _heading_at(tokens, i, headings, subs, longest_heading)
            if switched:
                kind, name, n = switched
                said = " ".join(t.core for t in tokens[i:i + n])
                if kind == "section":
                    current = sections.setdefault(name, _Section())
                    changes.append(Change("section", said, name))
                else:
                    current.mark("\n")
                    current.word(f"{name}:")
                    changes.append(Change("subheading", said, f"{name}:"))
                i += n
                # the colon or period that ended the heading was the heading's
                follow = _mark_at(tokens, i)
                if follow and follow[0] in ".:":
                    i += follow[1]
                dropped_mark = False
                continue
        word = token.lead + token.core
        if dropped_mark and re.fullmatch(r"[A-Z][a-z]+", token.core) and token.core != "I":
            # Whisper began a sentence here; the radiologist did not ("nodule. In the ...")
            word = token.lead + token.core.lower()
        if word:
            current.word(word)
        if spoken_marks:
            kept = "".join(c for c in token.trail if c in "\"')]")
            if kept:
                current.text += kept
            dropped_mark = any(c in ".?!" for c in token.trail)
        elif token.trail:
            current.text += token.trail
        i += 1
    return {name: s.text.strip() for name, s in sections.items() if s.text.strip()}, changes


def _heading_at(tokens: Sequence[Token], i: int, headings: Mapping[tuple[str, ...], str],
                subs: Mapping[tuple[str, ...], str], longest: int) -> tuple[str, str, int] | None:
    """A spoken heading at token ``i``: ("section", key, n) or ("subheading", title, n)."""
    for n in range(longest, 0, -1):
        phrase = tuple(t.key for t in tokens[i:i + n])
        if len(phrase) < n:
            continue
        last = tokens[i + n - 1]
        after = _mark_at(tokens, i + n)
        ends = i + n == len(tokens) or bool(after and after[0] in ".:\n\n")
        if phrase in headings and (ends or any(c in ".:," for c in last.trail)):
            return "section", headings[phrase], n
        if phrase in subs and (bool(after and after[0] == ":") or ":" in last.trail):
            return "subheading", subs[phrase], n
    return None
