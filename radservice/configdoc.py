"""docs/configuration.md, generated: every key of Settings with its type, default, environment
variable and meaning (the comment beside it in config/radservice.toml, the documented default).

    .venv/bin/python -m radservice.configdoc > docs/configuration.md

tests/unit/test_configdoc.py fails when the file is stale or a key has no meaning written.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from radservice.config import DEFAULT_CONFIG_PATH, Settings

_KEY_LINE = re.compile(r"^#?\s*(?P<key>[a-z_][a-z0-9_]*)\s*=\s*(?P<value>.*?)\s{2,}#\s?(?P<meaning>.*)$")
_MORE_LINE = re.compile(r"^#?\s{6,}#\s?(?P<meaning>.*)$")


def meanings(toml_text: str) -> dict[tuple[str, str], str]:
    """(section, key) -> the comment beside the key in the documented default file (a commented-out
    key counts; a comment line indented under it continues it)."""
    found: dict[tuple[str, str], str] = {}
    section, last = "", None
    for line in toml_text.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section, last = header.group(1), None
            continue
        match = _KEY_LINE.match(line)
        if match and section:
            last = (section, match.group("key"))
            found.setdefault(last, match.group("meaning").strip())
            continue
        more = _MORE_LINE.match(line)
        if more and last is not None:
            found[last] = f"{found[last]} {more.group('meaning').strip()}"
            continue
        last = None
    return found


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f'"{a}"' for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" (optional)" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if annotation is SecretStr:
        return "secret string"
    if annotation is Path:
        return "path"
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(annotation, str(annotation))


def _limits(info: FieldInfo) -> str:
    bounds = []
    for item in info.metadata:
        if isinstance(item, Ge):
            bounds.append(f">= {item.ge}")
        elif isinstance(item, Gt):
            bounds.append(f"> {item.gt}")
        elif isinstance(item, Le):
            bounds.append(f"<= {item.le}")
        elif isinstance(item, MinLen):
            bounds.append(f"length >= {item.min_length}")
        elif isinstance(item, MaxLen):
            bounds.append(f"length <= {item.max_length}")
        elif getattr(item, "pattern", None):
            bounds.append(f"matches `{item.pattern}`")
    return ", ".join(bounds)


def _default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "(none)"
    if isinstance(value, SecretStr):
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(toml_text: str | None = None) -> str:
    """The whole of docs/configuration.md."""
    text = toml_text if toml_text is not None else DEFAULT_CONFIG_PATH.read_text()
    known = meanings(text)
    out = [
        "# Configuration",
        "",
        "Generated from the Settings model (`radservice/config.py`) and the comments of the documented",
        "default file `config/radservice.toml`; do not edit by hand:",
        "`.venv/bin/python -m radservice.configdoc > docs/configuration.md`.",
        "",
        "Every key is read from the TOML file (`--config FILE`, else `RADSERVICE_CONFIG`, else",
        "`config/radservice.toml`) and overridden by its environment variable. An unknown key or a",
        "value of the wrong type stops every command with exit code 2, naming the file and the key.",
        "Relative paths are taken from the working directory. Secrets: `database.password_file` and",
        "`llm.api_key_file` read a file (a compose or Kubernetes secret) instead of a value.",
        "",
    ]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        out += [f"## [{section}]", ""]
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith(model.__name__ + "("):
            out += [doc.splitlines()[0], ""]
        out += ["| key | type | default | environment variable | meaning |", "| --- | --- | --- | --- | --- |"]
        for key, info in model.model_fields.items():
            kind = _type_name(info.annotation)
            limits = _limits(info)
            if limits:
                kind = f"{kind} ({limits})"
            env = f"RADSERVICE_{section.upper()}__{key.upper()}"
            meaning = known.get((section, key), "")
            out.append(f"| `{key}` | {_cell(kind)} | `{_default(info)}` | `{env}` | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out)


def undocumented(toml_text: str | None = None) -> list[str]:
    """Keys of Settings without a meaning in the documented default file."""
    text = toml_text if toml_text is not None else DEFAULT_CONFIG_PATH.read_text()
    known = meanings(text)
    missing = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        missing += [f"{section}.{key}" for key in model.model_fields if (section, key) not in known]
    return missing


if __name__ == "__main__":
    sys.stdout.write(render())
