"""live dictation: stream parts, reset counter, published partial text, new statuses

Revision ID: 0005_live_dictation
Revises: 0004_dictation_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_live_dictation'
down_revision = '0004_dictation_jobs'
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('received', 'transcribing', 'transcribed', 'failed')"
NEW_STATUSES = ("status IN ('received', 'recording', 'finalizing', 'interrupted', 'transcribing', "
                "'transcribed', 'failed')")


def upgrade() -> None:
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audio_parts', sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column('stream_session', sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column('stream_epoch', sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column('partial_seq', sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column('partial_committed', sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('partial_text', sa.Text(), nullable=False, server_default=""))
        batch_op.drop_constraint(op.f('ck_dictations_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_dictations_status'), NEW_STATUSES)


def downgrade() -> None:
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_dictations_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_dictations_status'), OLD_STATUSES)
        batch_op.drop_column('partial_text')
        batch_op.drop_column('partial_committed')
        batch_op.drop_column('partial_seq')
        batch_op.drop_column('stream_epoch')
        batch_op.drop_column('stream_session')
        batch_op.drop_column('audio_parts')
