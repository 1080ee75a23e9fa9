"""reports: one per study with section texts, refinement notes and merged dictations

Revision ID: 0006_reports
Revises: 0005_live_dictation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_reports'
down_revision = '0005_live_dictation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('template', sa.String(length=100), nullable=False),
    sa.Column('titles', sa.JSON(), nullable=False),
    sa.Column('sections', sa.JSON(), nullable=False),
    sa.Column('notes', sa.JSON(), nullable=False),
    sa.Column('dictation_ids', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.Integer(), nullable=True),
    sa.CheckConstraint("status IN ('draft', 'preliminary', 'final', 'amended')", name=op.f('ck_reports_status')),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_reports_study_id_studies')),
    sa.ForeignKeyConstraint(['updated_by'], ['users.id'], name=op.f('fk_reports_updated_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reports')),
    sa.UniqueConstraint('study_id', name=op.f('uq_reports_study_id'))
    )


def downgrade() -> None:
    op.drop_table('reports')
