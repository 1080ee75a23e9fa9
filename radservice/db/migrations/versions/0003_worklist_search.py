"""worklist search: studies.search_text, with a trigram index on PostgreSQL

Revision ID: 0003_worklist_search
Revises: 0002_worklist_intake
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = '0003_worklist_search'
down_revision = '0002_worklist_intake'
branch_labels = None
depends_on = None

log = logging.getLogger("radservice.db")

#: Created only where pg_trgm can be had; the model does not declare it (see env.py).
TRIGRAM_INDEX = "ix_studies_search_text_trgm"


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_text', sa.Text(), server_default='', nullable=False))
    # Studies received before this revision: the same text the application writes.
    op.execute(
        "UPDATE studies SET search_text = lower(coalesce(("
        " SELECT p.family_name || ' ' || p.given_name || ' ' || p.patient_id FROM patients p"
        " WHERE p.id = studies.patient_id), '') || ' ' || accession_number || ' ' || procedure_text)"
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it. Where
    # it cannot be had, search still works, by scanning the awaiting studies.
    savepoint = bind.begin_nested()
    try:
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        bind.execute(sa.text(f"CREATE INDEX {TRIGRAM_INDEX} ON studies USING gin (search_text gin_trgm_ops)"))
        savepoint.commit()
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        log.warning("pg_trgm not available (%s): worklist search runs without its index", type(exc.orig).__name__)


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('search_text')
