"""Report templates: which sections a report has, in which order, and how each is spoken.

Admins add templates without code: ``config/templates/*.toml``, one template a file::

    name = "CT chest"
    modalities = ["CT"]                        # empty: any modality
    procedure_codes = ["CTCHEST", "71260"]     # OBR-44 / OBR-4 codes that pick it first
    procedure_words = ["chest", "thorax"]      # or words of the procedure text

    [[sections]]
    key = "findings"                           # the key in the report API
    title = "Findings"
    spoken = ["findings"]                      # what the radiologist says to switch to it
    subheadings = ["Lungs", "Pleura", "Heart", "Mediastinum", "Bones"]
    text = ""                                  # pre-filled text (e.g. a standard technique)

The study's procedure code picks a template first, then modality and procedure words, then
modality alone, then ``default.toml``.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("radservice.compose")


class TemplateError(ValueError):
    """A template file that cannot be used (the message names the file and the problem)."""


@dataclass(frozen=True)
class SectionSpec:
    key: str
    title: str
    spoken: tuple[str, ...] = ()
    subheadings: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class Template:
    name: str
    sections: tuple[SectionSpec, ...]
    modalities: frozenset[str] = frozenset()
    procedure_codes: frozenset[str] = frozenset()
    procedure_words: frozenset[str] = frozenset()
    source: str = ""

    def headings(self) -> dict[tuple[str, ...], str]:
        """Spoken heading (lower-case words) -> section key."""
        spoken: dict[tuple[str, ...], str] = {}
        for s in self.sections:
            for phrase in (*s.spoken, s.title):
                spoken[tuple(re.sub(r"[^a-z0-9 ]", "", phrase.lower()).split())] = s.key
        return spoken

    def empty_sections(self) -> dict[str, str]:
        return {s.key: s.text for s in self.sections}

    def _score(self, modality: str, code: str, words: set[str]) -> int:
        if self.modalities and modality.upper() not in self.modalities:
            return -1
        if code and code.upper() in self.procedure_codes:
            return 100
        if self.procedure_words:
            return 10 + len(self.procedure_words & words) * 2 - 1 if self.procedure_words & words else -1
        return 5 if self.modalities else 0


#: Used when the folder holds no default.toml (or no folder exists).
BUILTIN_DEFAULT = Template(
    name="default",
    sections=(
        SectionSpec("clinical_history", "Clinical history", ("clinical history", "history", "indication")),
        SectionSpec("technique", "Technique", ("technique",)),
        SectionSpec("comparison", "Comparison", ("comparison",)),
        SectionSpec("findings", "Findings", ("findings",)),
        SectionSpec("impression", "Impression", ("impression", "conclusion")),
    ),
    source="built in",
)


def _strings(raw: Any, what: str, path: Path) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise TemplateError(f"{path.name}: {what} must be a list of strings")
    return tuple(raw)


def load_template(path: Path) -> Template:
    """One template file.

    Raises
    ------
    TemplateError
        Not TOML, no sections, a section without key or title, or a key used twice.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path.name}: not valid TOML ({exc})") from exc
    sections = []
    for n, raw in enumerate(data.get("sections") or [], start=1):
        key, title = raw.get("key"), raw.get("title")
        if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", key) or not isinstance(title, str):
            raise TemplateError(f"{path.name}: section {n} needs a key (lower_case) and a title")
        sections.append(SectionSpec(key, title, _strings(raw.get("spoken"), "spoken", path),
                                    _strings(raw.get("subheadings"), "subheadings", path), str(raw.get("text", ""))))
    if not sections:
        raise TemplateError(f"{path.name}: a template needs at least one [[sections]] entry")
    keys = [s.key for s in sections]
    if len(set(keys)) != len(keys):
        raise TemplateError(f"{path.name}: a section key is used twice")
    return Template(
        name=str(data.get("name", path.stem)), sections=tuple(sections),
        modalities=frozenset(m.upper() for m in _strings(data.get("modalities"), "modalities", path)),
        procedure_codes=frozenset(c.upper() for c in _strings(data.get("procedure_codes"), "procedure_codes", path)),
        procedure_words=frozenset(w.lower() for w in _strings(data.get("procedure_words"), "procedure_words", path)),
        source=path.name,
    )


@dataclass
class Templates:
    """Every template of a folder; ``pick`` chooses one for a study."""

    templates: list[Template] = field(default_factory=list)
    default: Template = BUILTIN_DEFAULT

    @classmethod
    def load(cls, folder: Path) -> Templates:
        """The folder's templates; a broken file is logged and skipped, never fatal to the worker."""
        found = cls()
        if not folder.is_dir():
            return found
        for path in sorted(folder.glob("*.toml")):
            try:
                template = load_template(path)
            except (TemplateError, OSError) as exc:
                log.error("report template skipped: %s", exc)
                continue
            if path.stem == "default":
                found.default = template
            else:
                found.templates.append(template)
        return found

    def pick(self, *, modality: str, procedure_code: str = "", procedure_text: str = "") -> Template:
        words = set(re.findall(r"[a-z]+", procedure_text.lower()))
        scored = [(t._score(modality, procedure_code, words), -n, t) for n, t in enumerate(self.templates)]
        best = max((s for s in scored if s[0] >= 0), default=None, key=lambda s: (s[0], s[1]))
        return best[2] if best else self.default

