"""worklist intake: inbound messages, priority rank, patient merges

Revision ID: 0002_worklist_intake
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_worklist_intake'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('peer', sa.String(length=64), nullable=False),
    sa.Column('sending_application', sa.String(length=64), nullable=False),
    sa.Column('sending_facility', sa.String(length=64), nullable=False),
    sa.Column('control_id', sa.String(length=64), nullable=False),
    sa.Column('message_type', sa.String(length=16), nullable=False),
    sa.Column('version', sa.String(length=8), nullable=False),
    sa.Column('ack_code', sa.String(length=2), nullable=False),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('error_text', sa.String(length=200), nullable=False),
    sa.Column('error_segment', sa.String(length=3), nullable=False),
    sa.Column('error_field', sa.Integer(), nullable=True),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_messages')),
    sa.UniqueConstraint('sending_application', 'sending_facility', 'control_id', name='uq_inbound_messages_sender_control_id')
    )
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_messages_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_messages_received_at'), ['received_at'], unique=False)

    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('merged_into_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_patients_merged_into_id_patients'), 'patients', ['merged_into_id'], ['id'])

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority_rank', sa.Integer(), server_default='2', nullable=False))
        batch_op.add_column(sa.Column('order_status', sa.String(length=8), server_default='', nullable=False))
        batch_op.create_index('ix_studies_worklist_order', ['priority_rank', 'ordered_at', 'id'], unique=False)

    # Rank the studies received before this revision by their priority.
    op.execute("UPDATE studies SET priority_rank = CASE priority WHEN 'S' THEN 0 WHEN 'A' THEN 1 ELSE 2 END")



def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index('ix_studies_worklist_order')
        batch_op.drop_column('order_status')
        batch_op.drop_column('priority_rank')

    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_patients_merged_into_id_patients'), type_='foreignkey')
        batch_op.drop_column('merged_into_id')

    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_messages_received_at'))
        batch_op.drop_index(batch_op.f('ix_inbound_messages_accession_number'))

    op.drop_table('inbound_messages')
