"""report_versions (each signed version, immutable) and outbox (one row per version per destination)

Revision ID: 0008_outbox
Revises: 0007_report_refinement
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_outbox'
down_revision = '0007_report_refinement'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('report_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('result_status', sa.String(length=1), nullable=False),
    sa.Column('titles', sa.JSON(), nullable=False),
    sa.Column('sections', sa.JSON(), nullable=False),
    sa.Column('signed_by', sa.Integer(), nullable=True),
    sa.Column('signer_username', sa.String(length=64), nullable=False),
    sa.Column('signer_name', sa.String(length=200), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sr_instance_uid', sa.String(length=64), nullable=False),
    sa.CheckConstraint("kind IN ('preliminary', 'final', 'addendum')", name=op.f('ck_report_versions_kind')),
    sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_report_versions_report_id_reports')),
    sa.ForeignKeyConstraint(['signed_by'], ['users.id'], name=op.f('fk_report_versions_signed_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_versions')),
    sa.UniqueConstraint('report_id', 'version', name=op.f('uq_report_versions_report_id_version')),
    sa.UniqueConstraint('sr_instance_uid', name=op.f('uq_report_versions_sr_instance_uid'))
    )
    with op.batch_alter_table('report_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_report_versions_report_id'), ['report_id'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('give_up_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('ack_code', sa.String(length=8), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'acked', 'failed')", name=op.f('ck_outbox_status')),
    sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_outbox_report_id_reports')),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_outbox_study_id_studies')),
    sa.ForeignKeyConstraint(['version_id'], ['report_versions.id'], name=op.f('fk_outbox_version_id_report_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('version_id', 'destination', name=op.f('uq_outbox_version_id_destination'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index('ix_outbox_due', ['status', 'next_attempt_at', 'id'], unique=False)
        batch_op.create_index('ix_outbox_order', ['study_id', 'destination', 'version'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_report_id'), ['report_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_report_id'))
        batch_op.drop_index('ix_outbox_order')
        batch_op.drop_index('ix_outbox_due')
        batch_op.drop_index(batch_op.f('ix_outbox_accession_number'))

    op.drop_table('outbox')
    with op.batch_alter_table('report_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_report_versions_report_id'))

    op.drop_table('report_versions')
