"""Database backends for the tests: every database test runs on SQLite and on PostgreSQL.

PostgreSQL is found at RADSERVICE_TEST_PG_URL (default: 127.0.0.1:5432, database `test`,
trust auth). Without it the PostgreSQL variants are skipped with the reason in the summary;
with CI=true a missing PostgreSQL stops the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from radservice.api.app import create_app
from radservice.config import Settings
from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker
from tests.support import fresh_pg_database

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
    with fresh_pg_database(PG_URL) as url:
        yield url


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated database of each backend."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def client(factory: sessionmaker[Session], tmp_path: Path) -> Iterator[TestClient]:
    """The HTTP API in-process on that database, its data under the test's folder."""
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)},
                        storage={"data_dir": tmp_path / "data"})
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client
