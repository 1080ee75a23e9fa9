"""The HTTP API keeps its own OpenAPI contract: schemathesis (every operation, stateful too)
against a running `radservice serve`, as a radiologist and as an admin, on SQLite and
PostgreSQL, with a study and a report to find: no 5xx, no status the schema does not document,
every body as the schema says, no traceback in the log."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support import add_report, add_study, free_port, make_user, serve, write_config

pytestmark = pytest.mark.integration
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_the_api_keeps_its_openapi_contract(db_url: str, factory: sessionmaker[Session], tmp_path: Path) -> None:
    add_study(factory, "ST-1")
    add_report(factory, "ST-1", {"findings": "Lungs: clear.", "impression": "No acute finding."})
    tokens = {role: make_user(factory, f"st.{role}", role) for role in ("radiologist", "admin")}
    config = write_config(tmp_path, port=free_port(), db_url=db_url, extra="[llm]\nenabled = false\n")
    with serve(config, tmp_path) as running:
        schema = httpx.get(f"{running.base_url}/openapi.json", timeout=10).json()
        operations = sum(1 for methods in schema["paths"].values() for method in methods
                         if method in ("get", "post", "put", "patch", "delete"))
        assert operations >= 23  # every route, the page's sign-in among them
        for role, token in tokens.items():
            result = subprocess.run(
                [str(SCHEMATHESIS), "run", f"{running.base_url}/openapi.json", "-H", f"Authorization: Bearer {token}",
                 "--checks", "all", "--max-examples", "25", "--seed", "7", "--request-timeout", "10",
                 "--continue-on-failure", "--phases", "examples,coverage,fuzzing,stateful"],
                capture_output=True, text=True, timeout=600, cwd=tmp_path)
            summary = result.stdout[-3000:]
            assert result.returncode == 0, f"{role}:\n{result.stdout[-12000:]}"
            counts = re.search(r"(\d+) generated, (\d+) passed", summary)
            assert f"Tested: {operations}" in summary, summary
            assert counts and counts[1] == counts[2] and int(counts[1]) > 500, summary
        log = running.log()
    assert "Traceback" not in log and " 500 " not in log
