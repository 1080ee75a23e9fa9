"""patients: birth_date_precision (HL7 allows a year or a month of birth)

Revision ID: 0011_birth_date_precision
Revises: 0010_inbound_content
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_birth_date_precision'
down_revision = '0010_inbound_content'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('birth_date_precision', sa.String(length=5), nullable=False,
                                      server_default='day'))


def downgrade() -> None:
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_column('birth_date_precision')
