"""Site macros: a short spoken name that expands to a configured text ("normal chest").

``config/macros.toml`` holds a ``[macros]`` table of name = text. A macro expands when its
name is said as a sentence of its own, optionally after "macro" or "insert" ("Normal chest."
or "insert normal chest"), never when the words occur inside a sentence ("a normal chest
radiograph" stays).
"""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path

from radservice.pipeline.refine.changes import Change

log = logging.getLogger("radservice.refine")


def load_macros(path: Path) -> dict[str, str]:
    """The macros of a file; an absent file means none, a broken one is logged and gives none."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError) as exc:
        log.error("macros file %s skipped: %s", path, exc)
        return {}
    table = data.get("macros", {})
    return {" ".join(str(k).lower().split()): str(v).strip() for k, v in table.items() if str(v).strip()}


def expand_macros(text: str, macros: dict[str, str]) -> tuple[str, list[Change]]:
    """``text`` with every macro said as its own sentence replaced by the macro's text."""
    if not macros:
        return text, []
    changes: list[Change] = []
    names = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(macros, key=len, reverse=True))
    pattern = re.compile(rf"(?:(?<=^)|(?<=[.?!:\n]\s)|(?<=[.?!:]\s\s)|(?<=\n))(?:(?:macro|insert)\s+)?({names})"
                         rf"(?:[.!]|(?=\s*$)|(?=\s*\n))", re.I)

    def expand(m: re.Match[str]) -> str:
        body = macros[" ".join(m.group(1).lower().split())]
        changes.append(Change("macro", m.group(0).strip(), body))
        return body

    return pattern.sub(expand, text), changes
