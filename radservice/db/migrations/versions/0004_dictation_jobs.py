"""dictation jobs

Revision ID: 0004_dictation_jobs
Revises: 0003_worklist_search
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_dictation_jobs'
down_revision = '0003_worklist_search'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('run_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name=op.f('ck_jobs_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_claim', ['status', 'run_after', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_lease_expires_at'), ['lease_expires_at'], unique=False)

    op.create_table('dictations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('section', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('audio_path', sa.String(length=255), nullable=True),
    sa.Column('audio_format', sa.String(length=32), nullable=False),
    sa.Column('audio_bytes', sa.Integer(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('transcript', sa.Text(), nullable=False),
    sa.Column('words', sa.JSON(), nullable=True),
    sa.Column('transcript_model', sa.String(length=128), nullable=False),
    sa.Column('transcribed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("section IN ('findings', 'impression')", name=op.f('ck_dictations_section')),
    sa.CheckConstraint("status IN ('received', 'transcribing', 'transcribed', 'failed')", name=op.f('ck_dictations_status')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_dictations_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_dictations_study_id_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dictations'))
    )
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dictations_study_id'), ['study_id'], unique=False)

    # ### end Alembic commands ###


def downgrade() -> None:
    with op.batch_alter_table('dictations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dictations_study_id'))

    op.drop_table('dictations')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_lease_expires_at'))
        batch_op.drop_index('ix_jobs_claim')

    op.drop_table('jobs')
    # ### end Alembic commands ###
