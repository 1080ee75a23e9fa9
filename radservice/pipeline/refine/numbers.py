"""Numbers and units in written form: "four point two centimeters" -> "4.2 cm", "five by three
centimeters" -> "5 x 3 cm", "fifth" and "5th" -> "fifth", "T two weighted" -> "T2-weighted",
"C five C six" -> "C5-C6".

Spelled numbers become digits through ``text2num`` (``alpha2digit``); which leaves "one" and
"two" spelled out unless a unit, "point" or "by" follows, as a report would ("one nodule").
"""

from __future__ import annotations

import re
from collections.abc import Callable

from text_to_num.transforms import alpha2digit

from radservice.pipeline.refine.changes import Change

UNITS: dict[str, str] = {
    "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm", "mm": "mm",
    "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm", "cm": "cm",
    "milliliter": "mL", "milliliters": "mL", "millilitre": "mL", "millilitres": "mL", "ml": "mL", "cc": "mL",
    "hounsfield": "HU", "hu": "HU", "percent": "%",
}
_UNIT = "|".join(sorted(UNITS, key=len, reverse=True))
_NUM = r"\d+(?:\.\d+)?"
_SMALL = {"zero": "0", "one": "1", "two": "2"}
_LEVELS = {"C": 7, "T": 12, "L": 5, "S": 5}
#: Ordinals stay words, as reports write anatomy ("fourth ventricle", "fifth metatarsal").
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth").split()
_NEXT_REGION = {"C": "T", "T": "L", "L": "S"}

Sub = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]
_NUMBER_WORD = re.compile(
    r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
    r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|point)\b", re.I)


def _unit(m: re.Match[str]) -> str:
    return f"{m.group(1)} {UNITS[m.group(2).lower()]}" if m.group(2).lower() != "percent" else f"{m.group(1)}%"


def _dimensions(m: re.Match[str]) -> str:
    # "5 cm by 3 cm" and "5 by 3 cm" both read "5 x 3 cm"
    numbers = re.findall(_NUM, m.group(0))
    unit = m.group("unit")
    return " x ".join(numbers) + (f" {unit}" if unit else "")


def _level(region: str, number: str) -> bool:
    return region in _LEVELS and 1 <= int(number) <= _LEVELS[region]


def _spine(m: re.Match[str]) -> str:
    first, n1, second, n2 = m.group(1), m.group(2), m.group(3) or m.group(1), m.group(4)
    if not (_level(first, n1) and _level(second, n2)):
        return m.group(0)
    follows = (second == first and int(n2) == int(n1) + 1) or (
        second == _NEXT_REGION.get(first) and int(n1) == _LEVELS[first] and n2 == "1")
    return f"{first}{n1}-{second}{n2}" if follows else m.group(0)


_RULES: list[Sub] = [
    # "1 hundred and 20" is not what a radiologist means: "one hundred and twenty" is 120
    (re.compile(r"\b(hundred|thousand) and (?=\w)", re.I), lambda m: f"{m.group(1)} "),
]
_AFTER: list[Sub] = [
    # what alpha2digit leaves spelled: "one" and "two" before a unit, "point" or "by", after
    # "point" or a spine region ("L5 S one")
    (re.compile(rf"(?<=\bpoint )(zero|one|two)\b|(?<=\b[CTLS] )(one|two)\b"
                rf"|\b(zero|one|two)\b(?=[\s-]+(?:point|by|{_UNIT})\b)", re.I), lambda m: _SMALL[m.group(0).lower()]),
    (re.compile(r"\b(\d+) point (\d+)\b"), lambda m: f"{m.group(1)}.{m.group(2)}"),
    # "5th" (alpha2digit's or Whisper's) reads "fifth"
    (re.compile(r"\b([1-9]|1\d|20)(?:st|nd|rd|th)\b"), lambda m: _ORDINALS[int(m.group(1)) - 1]),
    # homophones of a number right before a spelled unit: "measures for millimeters" is 4 mm
    (re.compile(r"\b(for|to|too)(?=\s+(?:millimet|centimet)[a-z]*\b)", re.I),
     lambda m: "4" if m.group(1).lower() == "for" else "2"),
    (re.compile(rf"\b({_NUM})[\s-]*({_UNIT})\b(?:[\s-]+units?\b)?", re.I), _unit),
    (re.compile(rf"(?<=\d)x(?={_NUM}\b)"), lambda m: " x "),  # "4.1x1.6x1.5 cm"
    (re.compile(rf"\b{_NUM}(?:\s*(?:mm|cm))?(?:\s+(?:by|x|times)\s+{_NUM}(?:\s*(?:mm|cm)(?=\s+(?:by|x|times)\b))?)+"
                rf"(?:\s*(?P<unit>mm|cm))?(?!\w)"), _dimensions),
    (re.compile(r"\bT\s?-?([12])[\s-]*weighted\b", re.I), lambda m: f"T{m.group(1)}-weighted"),
    (re.compile(r"\b([CTLS])\s?-?(\d{1,2})(?:\s*(?:-|to|through)\s*|\s+)(?:([CTLS])\s?-?)?(\d{1,2})\b(?!\s*(?:mm|cm|%))"),
     _spine),
    # written together: "L4L5", "L5S1"
    (re.compile(r"\b([CTLS])(\d{1,2})-?([CTLS])(\d{1,2})(?=[A-Z]?\b)"), _spine),
    (re.compile(r"\b([CTLS]) (\d{1,2})\b(?!\s*(?:mm|cm|%|x\b))"),
     lambda m: f"{m.group(1)}{m.group(2)}" if _level(m.group(1), m.group(2)) else m.group(0)),
]


def _apply(text: str, rules: list[Sub]) -> str:
    for pattern, replace in rules:
        text = pattern.sub(replace, text)
    return text


def written_numbers(text: str) -> tuple[str, list[Change]]:
    """Spelled numbers, units, dimensions, MR weightings and spine levels in written form."""
    out: list[str] = []
    changes: list[Change] = []
    # line by line and sentence by sentence: a number never runs across a full stop
    for piece in re.split(r"((?<=[.?!;:])\s+|\n+)", text):
        if not piece or piece.isspace():
            out.append(piece)
            continue
        converted = _apply(piece, _RULES)
        if _NUMBER_WORD.search(converted):  # alpha2digit is most of the cost: only where it can act
            converted = alpha2digit(converted, "en")
        converted = _apply(converted, _AFTER)
        if converted != piece:
            changes.append(Change("numbers and units", piece, converted))
        out.append(converted)
    return "".join(out), changes
