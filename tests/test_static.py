"""Static checks the project holds itself to: mypy strict on the package, ruff, and the layering rule."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Domain code speaks in studies and reports; the wire and the web stay at the edge.
FORBIDDEN_IN_DOMAIN = ("fastapi", "starlette", "uvicorn", "pynetdicom", "hl7apy", "hl7", "integrations")
EDGE_PACKAGES = ("api",)
COMPOSITION_ROOTS = ("cli.py", "serve.py", "handlers.py", "demo.py")


def test_mypy_strict_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "radservice", "integrations", "tests", "bench",
                             "fixtures"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]


def test_domain_modules_import_no_wire_or_web_library() -> None:
    offenders = []
    for path in (REPO / "radservice").rglob("*.py"):
        rel = path.relative_to(REPO / "radservice")
        if rel.parts[0] in EDGE_PACKAGES or str(rel) in COMPOSITION_ROOTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IN_DOMAIN]
    assert offenders == []
