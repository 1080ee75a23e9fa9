"""A person's name in parts, as HL7 (XCN, CNN) and DICOM (PN) carry it.

Users get structured names (``radservice user add --family --given ...``); a user or a signed
version from before that only has a display name is read by :func:`parse_display_name`, which
knows the two ways people write names ("Smith, John" and "John Smith, MD") instead of taking
the last word as the family name.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

#: Academic and professional degrees written after a name (HL7 table 0360, the common ones).
DEGREES = {"MD", "DO", "PHD", "MBBS", "MBCHB", "FRCR", "FRCP", "FACR", "DMRD", "MSC", "BSC", "RN", "NP", "PA",
           "DDS", "DMD", "MPH", "MA", "MS", "BS", "DVM", "DABR", "FRANZCR", "DNB", "MRCP", "MBBCH"}
#: Degrees as they are written in mixed case (others count without a comma only in capitals).
_MIXED_DEGREES = {"PhD", "MBChB", "MSc", "BSc", "DPhil", "MBBCh"}
#: Titles written before a name.
PREFIXES = {"DR", "PROF", "PROFESSOR", "MR", "MRS", "MS", "MISS", "MX", "SIR", "DAME"}
#: Lower-case particles that begin a family name.
PARTICLES = {"van", "von", "der", "den", "de", "da", "di", "del", "della", "du", "le", "la", "ten", "ter", "dos", "das"}
#: Generational suffixes.
SUFFIXES = {"JR", "SR", "II", "III", "IV", "V"}

_WORD = re.compile(r"[^\s,]+")


@dataclass(frozen=True)
class PersonName:
    """Family and given name, middle name(s), prefix ("Dr."), suffix ("Jr."), degree ("MD")."""

    family: str
    given: str = ""
    middle: str = ""
    prefix: str = ""
    suffix: str = ""
    degree: str = ""

    def display(self) -> str:
        """As a person reads it: "Dr. Grace B Hopper Jr., PhD"."""
        text = " ".join(p for p in (self.prefix, self.given, self.middle, self.family, self.suffix) if p)
        return f"{text}, {self.degree}" if self.degree else text

    def as_dict(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonName:
        known = {f.name for f in fields(cls)}
        return cls(**{key: str(value) for key, value in data.items() if key in known and value})


def _norm(word: str) -> str:
    return word.upper().replace(".", "")


def parse_display_name(display_name: str, username: str) -> PersonName:
    """The parts of a name written as one string; the username as family name when there is none.

    "Smith, John" -> family Smith, given John. "John Smith, MD" -> family Smith, given John,
    degree MD. "Dr. Grace Hopper" -> prefix Dr., given Grace, family Hopper. A middle name is
    what stands between the given and the family name.
    """
    text = " ".join(display_name.split())
    if not text:
        return PersonName(family=username)
    degrees: list[str] = []
    # Trailing degrees after a comma ("John Smith, MD, PhD"), or written as degrees are without
    # one ("John Smith MD"; "Anh Do" and "Li Ma" are names, not degrees).
    parts = [p.strip() for p in text.split(",")]
    while len(parts) > 1 and parts[-1] and all(_norm(w) in DEGREES for w in _WORD.findall(parts[-1])):
        degrees.insert(0, parts.pop())
    suffix_part = ""
    if len(parts) > 1 and _norm(parts[-1]) in SUFFIXES:  # "Martin Luther King, Jr."
        suffix_part = parts.pop()
    words = _WORD.findall(parts[0]) if len(parts) == 1 else []
    while len(words) > 1 and _norm(words[-1]) in DEGREES and (words[-1].isupper() or words[-1] in _MIXED_DEGREES):
        degrees.insert(0, words.pop())
    degree = " ".join(degrees)
    if len(parts) > 1:
        # "Family, Given [Middle]" (the comma form); a prefix may still lead the given part.
        family = parts[0]
        rest = _WORD.findall(" ".join(parts[1:]))
        prefix, suffix, rest = _take_prefix_suffix(rest)
        return PersonName(family=family, given=rest[0] if rest else "", middle=" ".join(rest[1:]),
                          prefix=prefix, suffix=suffix, degree=degree)
    prefix, suffix, words = _take_prefix_suffix(words)
    suffix = suffix_part or suffix
    if not words:
        return PersonName(family=username, prefix=prefix, suffix=suffix, degree=degree)
    if len(words) == 1:
        return PersonName(family=words[0], prefix=prefix, suffix=suffix, degree=degree)
    # Lower-case particles before the last word belong to the family name ("van der Berg").
    cut = len(words) - 1
    while cut > 1 and words[cut - 1] in PARTICLES:
        cut -= 1
    return PersonName(family=" ".join(words[cut:]), given=words[0], middle=" ".join(words[1:cut]), prefix=prefix,
                      suffix=suffix, degree=degree)


def _take_prefix_suffix(words: list[str]) -> tuple[str, str, list[str]]:
    prefix = suffix = ""
    if len(words) > 1 and _norm(words[0]) in PREFIXES:
        prefix, words = words[0], words[1:]
    if len(words) > 1 and _norm(words[-1]) in SUFFIXES:
        suffix, words = words[-1], words[:-1]
    return prefix, suffix, words
