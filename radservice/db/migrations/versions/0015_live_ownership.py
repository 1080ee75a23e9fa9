"""dictations: when the API last saw a live dictation's socket open (live_seen_at), and who
spoke each part of the recording (part_speakers: a user id per part)

Revision ID: 0015_live_ownership
Revises: 0014_audit_client
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015_live_ownership'
down_revision = '0014_audit_client'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('live_seen_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('part_speakers', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.drop_column('part_speakers')
        batch_op.drop_column('live_seen_at')
