"""Vocabulary correction: misheard phrases matched to radiology terms by spelling and sound.

"plural diffusion" -> "pleural effusion", "new methorex" -> "pneumothorax". A run of one to
five words is compared with every term of the study's vocabulary (``config/vocabulary/``) by
edit similarity (``rapidfuzz``) of its letters and of their Metaphone keys (``jellyfish``).
Conservative by construction: a run that holds a laterality or negation word, a digit, or
only words already known (terms' words and common English function words) is never changed,
and a single word must be long and close in both spelling and sound. The site's general
lexicon (``config/lexicon.txt``: terms of every region, not picked for the study) only
corrects a run with a word that is not English at all ("retroperitonal", "meningoma"): a real
word ("granulation", "arthrosis", "patient") is never turned into another term on a guess.
Whether a word is English comes from ``wordfreq`` (its frequency in large English corpora).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import jellyfish
from rapidfuzz import fuzz, process

from radservice.pipeline.refine.changes import Change

#: Words the rules never change or remove (a report that loses one says something else).
LATERALITY = frozenset({"left", "right", "bilateral", "bilaterally", "unilateral", "ipsilateral", "contralateral"})
#: Words that negate what follows them in a clause ("negative for", "free of" and "absence of" too).
NEGATORS = frozenset({"no", "not", "without", "none", "never", "nor", "neither", "absent"})
NEGATION = NEGATORS | {"negative", "absence", "free", "unremarkable", "normal"}
#: Position words: swapping one for another is as wrong as swapping left and right.
POSITION = frozenset({"anterior", "posterior", "superior", "inferior", "medial", "lateral", "proximal", "distal",
                      "upper", "lower", "middle", "dorsal", "ventral", "volar", "palmar", "plantar", "cranial",
                      "caudal", "internal", "external", "central", "peripheral", "apical", "basal"})
PROTECTED = LATERALITY | NEGATION | POSITION
#: Short function words a run may neither start nor end with ("kidney is" is not "kidneys").
_EDGE = frozenset({"a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "is", "are", "was", "were", "with",
                   "by", "for", "as", "it", "its"})

#: Common English words that are never the misheard part of a term by themselves.
COMMON = frozenset("""
a an the and or but if of in on at to for from by with as is are was were be been being has have had do does
did this that these those there here it its which who whom whose what when where why how than then so such
there's it's is also again both each either any all some more most less least very much many few one two three
upper lower middle small large mild moderate severe new old acute chronic seen noted see measuring measures
size sized within along into over under above below between after before since until up down out about
again may might can could should would will shall must no not nor only same other another further
""".split())

MAX_RUN = 5
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


@dataclass(frozen=True)
class _Term:
    text: str
    letters: str
    key: str
    words: int
    #: from the general lexicon: only for runs with a word that is not English
    general: bool = False


def is_english(word: str) -> bool:
    """A word English corpora know (``wordfreq``), however rare: "arthrosis" is, "lumbinectomy" not."""
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en") > 0


def _letters(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def _key(letters: str) -> str:
    return jellyfish.metaphone(letters) if letters else ""


class TermCorrector:
    """Corrects misheard radiology terms in text, against one vocabulary.

    Parameters
    ----------
    terms
        The vocabulary (phrases of one or more words).
    min_ratio
        Least spelling similarity (0-100) of a run of several words to a term.
    min_ratio_single
        Least spelling similarity for a single word (sound must agree as closely).
    """

    def __init__(self, terms: Iterable[str], *, min_ratio: float = 83.0, min_ratio_single: float = 86.0,
                 lexicon: Iterable[str] = ()) -> None:
        # a correction never brings in a laterality or negation word ("lateral" is not "bilateral")
        study = list(dict.fromkeys(terms))
        chosen = [(t, False) for t in study] + [(t, True) for t in dict.fromkeys(lexicon) if t not in set(study)]
        self.terms = [_Term(t, _letters(t), _key(_letters(t)), len(t.split()), general) for t, general in chosen
                      if len(_letters(t)) >= 4 and not PROTECTED & {w.lower() for w in t.split()}]
        self._spellings = [t.letters for t in self.terms]
        # a term's words are known in their other number too ("arteries" is not a misheard "arteritis")
        self.known = {f for t in self.terms for w in t.text.split() for f in _forms(w.lower())} | COMMON
        self.exact = {t.text.lower() for t in self.terms}
        self.min_ratio = min_ratio
        self.min_ratio_single = min_ratio_single

    def correct(self, text: str, *, sure: frozenset[str] = frozenset()) -> tuple[str, list[Change]]:
        """``text`` with misheard terms replaced, and the list of replacements.

        ``sure`` holds words (lower case) the recogniser was sure of: a run with one of them is
        never changed.
        """
        words = list(_WORD.finditer(text))
        out: list[str] = []
        changes: list[Change] = []
        position = 0
        i = 0
        while i < len(words):
            found = self._best_at(text, words, i, sure)
            if found is None:
                i += 1
                continue
            n, term = found
            start, end = words[i].start(), words[i + n - 1].end()
            before = text[start:end]
            after = _cased(term.text, before)
            out.append(text[position:start] + after)
            changes.append(Change("vocabulary", before, after))
            position = end
            i += n
        out.append(text[position:])
        return "".join(out), changes

    def _score(self, letters: str, term: _Term, *, single: bool) -> float | None:
        """How well ``letters`` spell and sound like ``term`` (0-100), or None if not well enough."""
        spelling = fuzz.ratio(letters, term.letters)
        if single:
            # close in spelling and sound, very close in spelling ("galladder", "gallbladder"), a
            # long word that sounds nearly the same, or an acronym said as the word it sounds like
            sound = fuzz.ratio(_key(letters), term.key)
            good = ((spelling >= self.min_ratio_single and sound >= 85) or (spelling >= 90 and sound >= 75)
                    or (spelling >= 80 and sound >= 90 and len(letters) >= 8)  # "hydrocellus"
                    or (term.text.isupper() and sound == 100 and spelling >= 75))  # "flare": FLAIR
            return (spelling + sound) / 2 if good else None
        if spelling < 65:
            return None
        key = _key(letters)
        sound = fuzz.ratio(key, term.key)
        if key == term.key and len(key) >= 5:  # sounds the same: "new methorex", "pneumothorax"
            return (spelling + sound) / 2
        if sound >= self.min_ratio - 5 and spelling >= self.min_ratio - 10 and (spelling + sound) / 2 >= self.min_ratio:
            return (spelling + sound) / 2
        return None

    def _best_at(self, text: str, words: list[re.Match[str]], i: int,
                 sure: frozenset[str]) -> tuple[int, _Term] | None:
        best: tuple[float, int, _Term] | None = None
        for n in range(1, MAX_RUN + 1):
            run = words[i:i + n]
            if len(run) < n:
                break
            # a run stays within a clause: no punctuation or digits between its words
            between = text[run[0].start():run[-1].end()]
            if re.search(r"[^A-Za-z' -]", between):
                break
            lowered = [m.group(0).lower() for m in run]
            if any(w in PROTECTED or w in sure for w in lowered):
                break
            if all(w in self.known for w in lowered) or " ".join(lowered) in self.exact:
                continue
            if n > 1 and (lowered[0] in _EDGE or lowered[-1] in _EDGE):
                continue
            letters = _letters(between)
            if n == 1 and len(letters) < 5:
                continue
            # spelling first, over every term at once (rapidfuzz, in C); sound only for the close ones
            close = process.extract(letters, self._spellings, scorer=fuzz.ratio, score_cutoff=65, limit=None)
            foreign: bool | None = None  # has the run a word English does not know? (asked once)
            for _, _, index in close:
                term = self.terms[index]
                if term.words > n + 1 or not 0.7 <= len(letters) / len(term.letters) <= 1.4:
                    continue
                if term.general:
                    if foreign is None:
                        foreign = not all(is_english(w) for w in lowered)
                    if not foreign:
                        continue
                if letters != term.letters and letters.rstrip("s") == term.letters.rstrip("s"):
                    continue  # singular and plural are both right ("4 millimeter nodule")
                score = self._score(letters, term, single=n == 1)
                if score is None or (best is not None and score <= best[0]):
                    continue
                if not _differing_part_matches(lowered, term.text.lower().split()):
                    continue
                # a word at either end that the term does without is not part of the mishearing
                # ("acute pulmonary embalism" is "acute" + "pulmonary embolism")
                if n > 1 and any((self._score(_letters(text[a.start():b.end()]), term, single=False) or 0) >= score
                                 for a, b in ((run[1], run[-1]), (run[0], run[-2]))):
                    continue
                best = (score, n, term)
        return (best[1], best[2]) if best else None


def _forms(word: str) -> set[str]:
    """A word with its plural or singular ("artery", "arteries"; "lobe", "lobes"; "fossa", "fossae"),
    and an adjective in -e with its noun in -ity ("hyperdense", "hyperdensity")."""
    forms = {word, word + "s", word + "es", word + "e"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("s"):
        forms.add(word[:-1])
    if word.endswith("e"):
        forms.add(word[:-1] + "ity")  # "hyperdense", "hyperdensity"
    if word.endswith("ity"):
        forms.add(word[:-3] + "e")
    if word.endswith(("a", "us", "is")):
        forms |= {word[:-1] + "ae", word[:-2] + "i", word[:-2] + "es"}
    return forms


def _differing_part_matches(said: list[str], term: list[str]) -> bool:
    """Where the run shares whole words with the term ("active enhancement", "acoustic
    enhancement"), the words that differ must be alike on their own: a right word is not
    replaced by another because its neighbour is a term word."""
    head = 0
    while head < min(len(said), len(term)) and said[head] == term[head]:
        head += 1
    tail = 0
    while tail < min(len(said), len(term)) - head and said[-1 - tail] == term[-1 - tail]:
        tail += 1
    if not head and not tail:
        return True
    rest_said = _letters(" ".join(said[head:len(said) - tail]))
    rest_term = _letters(" ".join(term[head:len(term) - tail]))
    if not rest_said or not rest_term:
        return False
    return fuzz.ratio(rest_said, rest_term) >= 75 and fuzz.ratio(_key(rest_said), _key(rest_term)) >= 75


def _cased(term: str, said: str) -> str:
    """The term with the capital of a sentence start kept ("Plural" -> "Pleural")."""
    return term[0].upper() + term[1:] if said[:1].isupper() and term[:1].islower() else term
