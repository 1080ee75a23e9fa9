"""The safety guard: the one place that decides whether an LLM's edit of report text is kept.

An edit may reorder, merge and rephrase; it may not change what the radiologist said. Both
texts are reduced to facts and the facts must be equal:

- laterality words (left, right, bilateral), and which finding or organ each one is bound to;
- negations (no, not, without, negative for, free of, absent, ...), counted, and whether each
  finding is negated (a negation covers the findings after it in its clause);
- numbers, with their units and the finding they measure;
- anatomy and finding terms (the study's vocabulary and a built-in list of findings);
- severity, size, change and certainty words (mild / severe, small / large, new / stable,
  possible / consistent with).

Chatter around the text ("Sure, here is the revised text:", "Let me know if ...") is stripped
first; text that still talks to the reader, or echoes the instructions, is rejected. The guard
is pure: text in, verdict out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from radservice.pipeline.refine.numbers import written_numbers
from radservice.pipeline.refine.terms import NEGATORS

#: Findings and anatomy the guard knows without any vocabulary (the study's terms are added).
BUILTIN_TERMS = """
nodule mass lesion cyst tumor tumour neoplasm metastasis metastases effusion pneumothorax pneumonia
consolidation atelectasis opacity opacities infiltrate edema oedema hemorrhage haemorrhage hematoma
fracture dislocation subluxation embolism thrombus thrombosis clot aneurysm dissection stenosis
occlusion infarct infarction ischemia abscess collection fluid calculus calculi stone stones
gallstones hydronephrosis obstruction perforation appendicitis diverticulitis cholecystitis
pancreatitis lymphadenopathy adenopathy emphysema fibrosis bronchiectasis
cardiomegaly ascites hernia herniation bulge tear rupture erosion
calcification calcifications enhancement restriction hydrocephalus
"""
ANATOMY = """
lung lungs lobe pleura pleural heart mediastinum hilum liver gallbladder pancreas spleen kidney
kidneys adrenal bladder bowel colon appendix aorta artery arteries vein brain ventricle ventricles
spine disc vertebra meniscus ligament tendon cartilage bone bones rib ribs thyroid breast uterus
ovary prostate
"""
#: Findings of more than one word.
_PHRASES = ("free air", "lymph node", "lymph nodes", "pericardial effusion", "midline shift", "mass effect")
#: Vocabulary entries that are report structure or dictation commands, not findings.
_NOT_FINDINGS = frozenset({"impression", "finding", "comparison", "technique", "history", "clinical", "conclusion",
                           "period", "comma", "colon", "new", "paragraph", "line", "millimeter", "centimeter",
                           "hounsfield", "unit", "contrast", "axial", "coronal", "reformat"})
_SIDES = {"left": "left", "right": "right", "bilateral": "bilateral", "bilaterally": "bilateral", "both": "bilateral"}
#: Two-word negations: "negative for", "free of", "absence of", "ruled out".
_NEGATING_PAIRS = {("negative", "for"), ("free", "of"), ("absence", "of"), ("ruled", "out")}
QUALIFIERS = frozenset("""
mild mildly moderate moderately severe severely minimal minimally marked markedly small large tiny
huge massive trace slight extensive focal diffuse acute subacute chronic new old stable unchanged
increased increasing decreased decreasing improved improving worsened worsening resolved
possible possibly probable probably likely unlikely suspicious concerning suggestive questionable
definite definitely consistent compatible indeterminate benign malignant
""".split())
_UNITS = {"mm": "mm", "cm": "cm", "ml": "mL", "hu": "HU", "%": "%"}
_CLAUSE = re.compile(r"[.;:!?\n]+|\s(?:but|however|although|whereas)\s", re.I)
_CHATTER_START = re.compile(
    r"^\s*(?:sure|certainly|of course|here(?:'s| is| are)|okay|ok|absolutely|below is|the (?:revised|cleaned|"
    r"corrected|merged|rewritten|updated))\b[^\n]*?(?::|\.|!)\s*(?:\n|$)", re.I)
_CHATTER_END = re.compile(
    r"\n\s*(?:let me know|i hope|feel free|please (?:note|let)|note:|if you (?:need|would|want)|"
    r"is there anything)[^\n]*$", re.I)
_TALKING = re.compile(r"\b(?:as an ai|language model|i cannot|i can't|i'm sorry|i am sorry|here is|here's|"
                      r"let me know|i have (?:revised|rewritten|merged|corrected))\b", re.I)
_LABEL = re.compile(r"^(?:impression|findings|conclusion)\s*:\s*", re.I)
#: Output shorter than this share of the input's words lost something; longer, it invented.
MIN_LENGTH_RATIO = 0.6
MAX_LENGTH_RATIO = 1.5


@dataclass(frozen=True)
class Verdict:
    """``accepted`` with the cleaned ``text``, or refused with the ``reasons`` (and the input)."""

    accepted: bool
    text: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class Facts:
    laterality: set[str] = field(default_factory=set)
    negations: int = 0
    numbers: Counter[str] = field(default_factory=Counter)
    measurements: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    terms: Counter[tuple[str, bool, str]] = field(default_factory=Counter)
    qualifiers: Counter[str] = field(default_factory=Counter)
    words: int = 0


def _key(word: str) -> str:
    """A word's comparison key: lower case, a plural's "s" off ("nodules" is "nodule")."""
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class Guard:
    """Compares an LLM's output with its input, for one study's vocabulary.

    Parameters
    ----------
    terms
        The study's vocabulary; with the built-in list, the findings and anatomy to keep.
    """

    def __init__(self, terms: Iterable[str] = ()) -> None:
        phrases = {tuple(_key(w) for w in re.findall(r"[a-z]+", t.lower()) if w not in _SIDES)
                   for t in [*BUILTIN_TERMS.split(), *ANATOMY.split(), *_PHRASES, *terms]}
        self.findings = {_key(w) for w in BUILTIN_TERMS.split()}
        phrases.discard(())
        phrases = {p for p in phrases if not set(p) <= _NOT_FINDINGS}
        self.phrases = phrases
        # the lengths of the phrases starting with each word, longest first
        starts: dict[str, set[int]] = {}
        for phrase in phrases:
            starts.setdefault(phrase[0], set()).add(len(phrase))
        self.lengths = {word: sorted(ns, reverse=True) for word, ns in starts.items()}

    def check(self, before: str, after: str, *, instructions: str = "", subset: bool = False) -> Verdict:
        """The verdict on ``after`` (the LLM's output) as an edit of ``before``.

        ``subset``: ``after`` may leave facts out (an impression drawn from findings) but may not
        change or add one.
        """
        text = strip_chatter(after)
        label = _LABEL.match(text)
        if label and not _LABEL.match(before.strip()):
            text = text[label.end():]  # "Impression: ...": the section is already known
        reasons: list[str] = []
        if not text.strip():
            return Verdict(False, before, ["empty answer"])
        if _TALKING.search(text):
            reasons.append("the answer talks to the reader instead of being report text")
        if instructions and _echoes(instructions, text):
            reasons.append("the answer repeats the instructions")
        old, new = self.facts(before), self.facts(text)
        reasons.extend(_added(old, new) if subset else _compare(old, new))
        invented = _new_words(before, text)
        if invented:
            reasons.append(f"findings changed: new words {', '.join(invented)}")
        if not subset and old.words and not MIN_LENGTH_RATIO <= new.words / old.words <= MAX_LENGTH_RATIO:
            reasons.append(f"length changed from {old.words} to {new.words} words")
        return Verdict(not reasons, text if not reasons else before, reasons)

    def facts(self, text: str) -> Facts:
        """What a text says, as comparable facts."""
        facts = Facts()
        for clause in _CLAUSE.split(written_numbers(text)[0]):
            self._clause_facts(clause, facts)
        return facts

    def _clause_facts(self, clause: str, facts: Facts) -> None:
        tokens = [t.lower() for t in re.findall(r"\d+(?:\.\d+)?%?|[A-Za-z]+(?:'[a-z]+)?", clause)]
        keys = [_key(t) for t in tokens]
        facts.words += len(tokens)
        negated = False
        side = ""
        terms: list[tuple[int, str, str]] = []  # (position, name, side)
        measures: list[tuple[int, str, str]] = []  # (position, value, unit)
        i = 0
        while i < len(tokens):
            word = tokens[i]
            # every negation counts the same ("without" and "no" are one class)
            if word in NEGATORS or word.endswith("n't") or tuple(tokens[i:i + 2]) in _NEGATING_PAIRS:
                negated = True
                facts.negations += 1
            if word in _SIDES:
                side = _SIDES[word]
                facts.laterality.add(side)
                i += 1
                continue
            if word in QUALIFIERS:
                facts.qualifiers[word] += 1
            number = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", word)
            if number:
                value = str(float(number.group(1)))
                facts.numbers[value] += 1
                unit = "%" if number.group(2) else _unit_after(tokens, i)
                if unit:
                    measures.append((i, value, unit))
                i += 1
                continue
            term = self._term_at(keys, i)
            if term:
                name, n = term
                facts.terms[(name, negated, side)] = 1
                terms.append((i, name, side))
                side = ""  # a side word binds to the next finding or organ only
                i += n
                continue
            i += 1
        if side:  # "hydronephrosis on the left": the side of the clause
            facts.terms[("", negated, side)] = 1
        # a measurement belongs to the nearest finding of its clause ("4 mm right upper lobe nodule"
        # measures the nodule), else the nearest organ; the one before wins a tie
        findings = [t for t in terms if self.findings & set(t[1].split())] or terms
        for at, value, unit in measures:
            nearest = min(findings, key=lambda t: (abs(t[0] - at), t[0] > at), default=(0, "", ""))
            facts.measurements[(value, unit, f"{nearest[2]} {nearest[1]}".strip())] += 1

    def _term_at(self, keys: list[str], i: int) -> tuple[str, int] | None:
        for n in self.lengths.get(keys[i], ()):
            phrase = tuple(keys[i:i + n])
            if len(phrase) == n and phrase in self.phrases:
                return " ".join(phrase), n
        return None

def _unit_after(tokens: list[str], i: int) -> str:
    """The unit of the number at ``i``: the next word, or the end of "4.1 x 1.6 x 1.5 cm"."""
    j = i + 1
    while j + 1 < len(tokens) and tokens[j] in ("x", "by") and re.fullmatch(r"\d+(?:\.\d+)?", tokens[j + 1]):
        j += 2
    return _UNITS.get(tokens[j], "") if j < len(tokens) else ""


def strip_chatter(text: str) -> str:
    """The report text of an answer: without a leading "Sure, here is ...:" line, a closing
    "Let me know ..." line, code fences, Markdown emphasis, or quotes around it all."""
    text = text.strip()
    text = re.sub(r"^```[a-z]*\n?|\n?```$", "", text).strip()
    previous = None
    while previous != text:
        previous = text
        text = _CHATTER_START.sub("", text, count=1).strip()
        text = _CHATTER_END.sub("", text).strip()
    text = re.sub(r"\*\*|__", "", text)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


#: Words of report phrasing an edit may bring in (7 letters or more; shorter ones are not checked).
_PHRASING = frozenset("""
present presence identified demonstrated demonstrates demonstrating visualized visualised observed noted
measuring measures measured measurement measurements including involving involves additionally however
otherwise respectively appearance appears appearing findings impression there within between evident
evidence remains remaining structures described seen following causing causes caused compared
""".split())


def _new_words(before: str, after: str) -> list[str]:
    """Long words of the answer found nowhere in its input: a finding or organ made up."""
    known = {_key(w) for w in re.findall(r"[a-z]+", before.lower())}
    found = []
    for word in re.findall(r"[a-z]+", after.lower()):
        if len(word) >= 7 and _key(word) not in known and word not in _PHRASING and word not in found:
            found.append(word)
    return found


def _echoes(instructions: str, text: str) -> bool:
    """True when the answer carries a run of eight or more words of the instructions."""
    said = re.findall(r"[a-z]+", instructions.lower())
    answer = " " + " ".join(re.findall(r"[a-z]+", text.lower())) + " "
    return any(" " + " ".join(said[i:i + 8]) + " " in answer for i in range(max(0, len(said) - 7)))


def _describe(counter: Counter[tuple[str, bool, str]]) -> str:
    parts = []
    for (name, negated, side), count in sorted(counter.items()):
        words = " ".join(w for w in ("no" if negated else "", side, name or "(side alone)") if w)
        parts.append(words + (f" x{count}" if count > 1 else ""))
    return ", ".join(parts)


def _added(old: Facts, new: Facts) -> list[str]:
    """What ``new`` says that ``old`` does not (for a summary, which may leave things out)."""
    reasons = []
    if new.laterality - old.laterality:
        reasons.append(f"laterality added: {sorted(new.laterality - old.laterality)}")
    if new.negations > old.negations:
        reasons.append(f"negations added: {old.negations} -> {new.negations}")
    if new.numbers - old.numbers:
        reasons.append(f"numbers added: {sorted((new.numbers - old.numbers).elements())}")
    if new.measurements - old.measurements:
        reasons.append(f"measurements changed: added {sorted(new.measurements - old.measurements)}")
    added_terms = set(new.terms) - set(old.terms)
    if added_terms:
        reasons.append(f"findings changed: added [{_describe(Counter(added_terms))}]")
    if new.qualifiers - old.qualifiers:
        reasons.append(f"qualifiers changed: added {sorted((new.qualifiers - old.qualifiers).elements())}")
    return reasons


def _compare(old: Facts, new: Facts) -> list[str]:
    reasons = []
    if old.laterality != new.laterality:
        reasons.append(f"laterality changed: {sorted(old.laterality)} -> {sorted(new.laterality)}")
    if old.negations != new.negations:
        reasons.append(f"negations changed: {old.negations} -> {new.negations}")
    if old.numbers != new.numbers:
        lost, added = old.numbers - new.numbers, new.numbers - old.numbers
        reasons.append(f"numbers changed: lost {sorted(lost)}, added {sorted(added)}")
    elif old.measurements != new.measurements:
        lost_m, added_m = old.measurements - new.measurements, new.measurements - old.measurements
        reasons.append(f"measurements changed: lost {sorted(lost_m)}, added {sorted(added_m)}")
    if old.terms != new.terms:
        lost_t, added_t = set(old.terms) - set(new.terms), set(new.terms) - set(old.terms)
        for name, negated, side in sorted(lost_t):
            moved = [t for t in added_t if t[0] == name]
            if any(t[1] == negated and t[2] != side for t in moved):
                reasons.append(f"laterality changed for {name or 'the clause'}: {side or 'none'} -> "
                               f"{', '.join(t[2] or 'none' for t in moved if t[1] == negated)}")
            elif any(t[1] != negated for t in moved):
                reasons.append(f"negations changed for {name}: {'negated' if negated else 'affirmed'} -> "
                               f"{'affirmed' if negated else 'negated'}")
        reasons.append(f"findings changed: lost [{_describe(Counter(lost_t))}], added [{_describe(Counter(added_t))}]")
    if old.qualifiers != new.qualifiers:
        lost_q, added_q = old.qualifiers - new.qualifiers, new.qualifiers - old.qualifiers
        reasons.append(f"qualifiers changed: lost {sorted(lost_q.elements())}, added {sorted(added_q.elements())}")
    return reasons

