"""Alembic migrations on SQLite and PostgreSQL: from empty to head, and back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from radservice.db import migrate
from radservice.db.models import Base
from radservice.db.session import make_engine

pytestmark = pytest.mark.integration


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert migrate.current_revision(engine) is None
        assert migrate.upgrade(engine) is None
        assert migrate.current_revision(engine) == migrate.head_revision()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        # a second upgrade is a no-op
        assert migrate.upgrade(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    return not (type_ == "index" and name == "ix_studies_search_text_trgm")


def test_migrations_match_the_models(db_url: str) -> None:
    """Autogenerate finds nothing to do: the migrations describe exactly the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False,
                                                         "include_object": _include_object})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        migrate.downgrade(engine, "base")
        assert "studies" not in inspect(engine).get_table_names()
        migrate.upgrade(engine)
        assert "studies" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_runs_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/sub/dir/rs.db")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_postgresql_gets_a_trigram_index_for_search(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("studies")}
        if engine.dialect.name == "postgresql":
            assert "ix_studies_search_text_trgm" in indexes
        else:
            assert "ix_studies_search_text_trgm" not in indexes
    finally:
        engine.dispose()
