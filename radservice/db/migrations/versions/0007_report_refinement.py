"""reports.refinement: "rules", "llm", or "rules-only: <reason>"

Revision ID: 0007_report_refinement
Revises: 0006_reports
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_report_refinement'
down_revision = '0006_reports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refinement', sa.String(length=300), nullable=False,
                                      server_default='rules'))


def downgrade() -> None:
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.drop_column('refinement')

