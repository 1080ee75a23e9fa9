"""docker-compose.yml read as Compose reads it: YAML (with anchors and merge keys), then
``${NAME}`` / ``${NAME:-default}`` / ``${NAME-default}`` interpolation from a given environment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}|\$\$")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with Compose's variable syntax replaced, in every string it holds."""
    if isinstance(value, str):
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, op, default = match.group("name"), match.group("op"), match.group("default") or ""
            if op == ":-" and not env.get(name):
                return default
            if op == "-" and name not in env:
                return default
            if name not in env:
                raise KeyError(f"{name} is not set and has no default")
            return env[name]
        return _VARIABLE.sub(one, value)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file with its variables set from ``env`` (none: every default)."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return dict(interpolate(data, env or {}))


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    """A service's environment as strings (Compose's list or mapping form)."""
    raw = compose["services"][name].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def mount_source(compose: dict[str, Any], name: str, target: str) -> str:
    """The host path or volume a service mounts at ``target`` (short syntax)."""
    for volume in compose["services"][name].get("volumes", []):
        parts = volume.split(":")
        if parts[1] == target:
            return str(parts[0])
    raise KeyError(f"{name} mounts nothing at {target}")
