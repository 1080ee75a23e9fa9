"""audit_events: the client's network address of an API request (who read what, from where)

Revision ID: 0014_audit_client
Revises: 0013_person_names
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_audit_client'
down_revision = '0013_person_names'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('client')
