"""Words the radiologist must check before signing: safety over silence.

A side, a negation or a passage the recogniser was unsure of is never corrected silently; it is
flagged on the report (a refinement note with the reason, and the word's time in the dictation so
the page can mark it and play it back). Flagged:

- a side word (left, right, bilateral) heard with low probability,
- a word that sounds like "left" or "right" ("light", "bright", "lift", "write", ...) next to
  anatomy, where a side word was probably said,
- a number or unit of a measurement heard with low probability, a sentence starting with a word
  like "no" ("nor", "know"),
- a negation heard with low probability, and a sentence whose first word is unsure (a "no" at the
  start of a sentence is the word Whisper loses most often),
- a passage of several words that are all improbable (noise, mumbling, a made-up phrase),
- a side that disagrees with the side of the ordered procedure ("right" in a left knee MRI).

Pure functions over the transcript's words (text, start, end, probability): no model, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from radservice.pipeline.refine.changes import Change
from radservice.pipeline.refine.terms import NEGATORS

#: A side word below this probability is flagged (tiny.en gives a clearly said side 0.9 and more).
SIDE_MIN_P = 0.6
#: A negation below this probability is flagged.
NEGATION_MIN_P = 0.5
#: The first word of a sentence below this probability is flagged (a "no" may have been lost).
SENTENCE_START_MIN_P = 0.3
#: A number or unit of a measurement below this probability is flagged (a size read wrong).
MEASURE_MIN_P = 0.4
#: A passage of at least ``UNCLEAR_RUN`` words whose mean probability is below ``UNCLEAR_MEAN_P``.
UNCLEAR_RUN = 4
UNCLEAR_MEAN_P = 0.35

SIDES = frozenset({"left", "right", "bilateral", "bilaterally"})
#: Everyday words Whisper writes for a side word it did not catch.
SIDE_SOUNDALIKES = frozenset({"light", "lights", "bright", "lift", "lifts", "write", "rite", "wright", "ride",
                              "rights", "lived", "laughed", "lest", "lefty", "loft", "fright", "lied", "rye"})
#: Words that say a side word belongs next to them: organs, limbs and parts that come in pairs or
#: halves, and the position words that follow a side ("right upper lobe").
ANATOMY = frozenset("""
lobe lobes lung lungs hemithorax pleural effusion kidney kidneys renal ureter adnexa adnexal ovary ovaries testis
testicle testicular breast breasts axilla axillary hilum hilar hemidiaphragm diaphragm atrium ventricle ventricular
lateral medial upper lower middle side sided frontal parietal temporal occipital hemisphere cerebellar basal ganglia
thalamus orbit maxillary sinus mastoid carotid vertebral subclavian femoral iliac popliteal tibial peroneal radial
ulnar brachial jugular portal hepatic liver adrenal inguinal pelvic hip knee ankle foot shoulder elbow wrist hand
thumb finger toe femur tibia fibula humerus radius ulna clavicle scapula rib ribs acetabulum patella meniscus
neural foramen foraminal recess paracentral thyroid parotid submandibular tonsil vocal cord piriform lamina pedicle
facet sacroiliac
""".split())
_SENTENCE_END = re.compile(r"[.?!:]$")
#: Words of a measurement: numbers as digits or words, and units.
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?%?")
MEASURE_WORDS = frozenset("""
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred point half
millimeter millimeters millimetre millimetres centimeter centimeters centimetre centimetres mm cm percent
""".split())
#: Everyday words Whisper writes for a "no" it did not catch, at a sentence's start.
NEGATION_SOUNDALIKES = frozenset({"nor", "know", "knows", "now"})
#: Section headings and spoken commands: an unsure heading loses no finding.
_NOT_FINDINGS = frozenset({"findings", "impression", "conclusion", "technique", "comparison", "history", "clinical",
                           "indication", "paragraph", "line", "period", "comma", "colon"})


@dataclass(frozen=True)
class Flag:
    """One word to check: the word as heard, its time in the dictation, and why."""

    word: str
    start: float
    reason: str

    def as_change(self) -> Change:
        """As a refinement note: rule ``flag``, the word, then the reason with its time."""
        return Change("flag", self.word, f"{self.reason} (at {self.start:.1f} s)")


def _key(word: str) -> str:
    return re.sub(r"[^a-z'/-]", "", word.lower())


def _side_part(key: str) -> str:
    """A joined word by its side part ("left-sided" -> "left"), else its letters."""
    parts = re.split(r"[-/]", key)
    return next((p for p in parts if p in SIDES), "".join(parts))


def ordered_side(procedure: str) -> str | None:
    """The side an ordered procedure names ("MRI LEFT KNEE" -> "left"), None for none or both."""
    words = set(re.findall(r"[a-z]+", procedure.lower()))
    if "bilateral" in words or ("left" in words and "right" in words):
        return None
    for side, spellings in (("left", {"left", "lt"}), ("right", {"right", "rt"})):
        if words & spellings:
            return side
    return None


def flag_words(words: Sequence[dict[str, Any]], *, procedure: str = "") -> list[Flag]:
    """The words of a transcript a radiologist must check, in order of time.

    Parameters
    ----------
    words
        The transcript's words as stored on the dictation: ``word`` (with its leading space and
        punctuation), ``start``, ``end``, ``probability``.
    procedure
        The ordered procedure's text, for a side that disagrees with the order.
    """
    # "left-sided", "right/left": each part of a joined word counts
    keys = [_side_part(_key(str(w["word"]))) for w in words]
    probs = [float(w.get("probability", 1.0)) for w in words]
    side = ordered_side(procedure)
    flags: dict[int, str] = {}
    for i, key in enumerate(keys):
        p = probs[i]
        near = set(keys[i + 1:i + 4])
        if key in SIDES and p < SIDE_MIN_P:
            flags[i] = f"side word heard with low confidence ({p:.0%})"
        elif key in SIDE_SOUNDALIKES and near & ANATOMY:
            flags[i] = f"'{key}' next to anatomy may be a misheard 'left' or 'right'"
        elif key in NEGATORS and p < NEGATION_MIN_P:
            flags[i] = f"negation heard with low confidence ({p:.0%})"
        elif key in NEGATION_SOUNDALIKES and _starts_sentence(words, i):
            flags[i] = f"'{key}' starting a sentence may be a misheard 'no'"
        elif p < MEASURE_MIN_P and (key in MEASURE_WORDS or _NUMBER.fullmatch(str(words[i]["word"]).strip(" .,;:"))):
            flags[i] = f"number or unit heard with low confidence ({p:.0%}): check the measurement"
        elif _starts_sentence(words, i) and p < SENTENCE_START_MIN_P and not _command(keys, i):
            flags[i] = f"unclear start of a sentence ({p:.0%}): a word such as 'no' may have been lost"
        elif side and key in SIDES - {side, "bilateral", "bilaterally"}:
            flags[i] = f"dictated '{key}'; the order is {procedure.strip()}: check the side"
    for start in _unclear_runs(probs):
        if start not in flags:
            flags[start] = f"unclear passage of {UNCLEAR_RUN} or more words from here (low confidence)"
    return [Flag(str(words[i]["word"]).strip(), float(words[i]["start"]), reason)
            for i, reason in sorted(flags.items())]


def _command(keys: Sequence[str], i: int) -> bool:
    """A heading or spoken command ("Impression", "new paragraph"): no finding to lose there."""
    return keys[i] in _NOT_FINDINGS or (keys[i] == "new" and keys[i + 1:i + 2] in (["paragraph"], ["line"]))


def _starts_sentence(words: Sequence[dict[str, Any]], i: int) -> bool:
    return i == 0 or bool(_SENTENCE_END.search(str(words[i - 1]["word"]).strip())) \
        or _key(str(words[i - 1]["word"])) == "period"


def _unclear_runs(probs: Sequence[float]) -> Iterable[int]:
    """Where passages of improbable words start (windows of ``UNCLEAR_RUN`` words, not overlapping)."""
    i = 0
    while i + UNCLEAR_RUN <= len(probs):
        if sum(probs[i:i + UNCLEAR_RUN]) / UNCLEAR_RUN < UNCLEAR_MEAN_P:
            yield i
            i += UNCLEAR_RUN
        else:
            i += 1


#: The "word" of a flag for speech that came out as no text.
UNHEARD_WORD = "(speech without text)"


def unheard_flags(stretches: Sequence[Sequence[float]]) -> list[Flag]:
    """A flag for each stretch of speech no text was written for (``Transcript.unheard``): words
    may be missing there, and only the radiologist, listening, can say which."""
    return [Flag(UNHEARD_WORD, float(a), f"{float(b) - float(a):.1f} s of speech came out as no text: "
                 "listen, and dictate again what is missing") for a, b in stretches]
