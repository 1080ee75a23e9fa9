"""dictations: the accurate pass after a live dictation (final_pass, interim_transcript), what its
merge into the report changed (draft_revision, draft_before), speech without text (unheard)

Revision ID: 0009_final_pass
Revises: 0008_outbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_final_pass'
down_revision = '0008_outbox'
branch_labels = None
depends_on = None

FINAL_PASS = "final_pass IN ('none', 'pending', 'applied', 'kept', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('final_pass', sa.String(length=16), nullable=False, server_default='none'))
        batch_op.add_column(sa.Column('interim_transcript', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('draft_revision', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('draft_before', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('unheard', sa.JSON(), nullable=True))
        batch_op.create_check_constraint(op.f('ck_dictations_final_pass'), FINAL_PASS)


def downgrade() -> None:
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_dictations_final_pass'), type_='check')
        batch_op.drop_column('unheard')
        batch_op.drop_column('draft_before')
        batch_op.drop_column('draft_revision')
        batch_op.drop_column('interim_transcript')
        batch_op.drop_column('final_pass')
