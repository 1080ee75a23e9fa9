"""Alembic migrations run from code: `radservice db upgrade` and `serve` at start."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

log = logging.getLogger("radservice.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Apply pending migrations; return the revision the database was at before."""
    before = current_revision(engine)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    after = current_revision(engine)
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)
    return before


def make_revision(engine: Engine, message: str) -> None:
    """Autogenerate a new migration against an up-to-date database (for developers)."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)


def downgrade(engine: Engine, revision: str) -> None:
    """Step the schema back to ``revision`` (``base`` = empty); for tests and rollbacks."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
