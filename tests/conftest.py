"""Database backends for the tests: every database test runs on SQLite and on PostgreSQL.

PostgreSQL is found at RADSERVICE_TEST_PG_URL (default: 127.0.0.1:5432, database `test`,
trust auth). Without it the PostgreSQL variants are skipped with the reason in the summary;
with CI=true a missing PostgreSQL stops the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("RADSERVICE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_pg_unavailable: str | None = None


def _probe_postgres() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    safe = make_url(PG_URL).render_as_string(hide_password=True)
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means "not available"; the reason is shown
        return f"PostgreSQL not reachable at {safe} ({type(exc).__name__}); set RADSERVICE_TEST_PG_URL or start it"
    return None


def pytest_configure(config: pytest.Config) -> None:
    global _pg_unavailable
    _pg_unavailable = _probe_postgres()
    if _pg_unavailable and IN_CI:
        raise pytest.UsageError(f"CI=true needs PostgreSQL: {_pg_unavailable}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _pg_unavailable:
        return
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.skip(reason=_pg_unavailable))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/radservice.db"
        return
    name = f"rs_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
