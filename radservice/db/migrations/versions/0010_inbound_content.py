"""inbound_messages: the content hash that tells a resend from new content under a reused control ID

Revision ID: 0010_inbound_content
Revises: 0009_final_pass
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_inbound_content'
down_revision = '0009_final_pass'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_hash', sa.String(length=64), nullable=False, server_default=''))
        batch_op.drop_constraint('uq_inbound_messages_sender_control_id', type_='unique')
        batch_op.create_unique_constraint('uq_inbound_messages_sender_control_id_content',
                                          ['sending_application', 'sending_facility', 'control_id', 'content_hash'])


def downgrade() -> None:
    # Rows that share a control ID with other content cannot keep the old constraint: the later
    # ones go (they were stored only as a record of what arrived; their effects stay).
    op.execute(
        "DELETE FROM inbound_messages WHERE id NOT IN ("
        " SELECT MIN(id) FROM inbound_messages GROUP BY sending_application, sending_facility, control_id)"
    )
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_constraint('uq_inbound_messages_sender_control_id_content', type_='unique')
        batch_op.create_unique_constraint('uq_inbound_messages_sender_control_id',
                                          ['sending_application', 'sending_facility', 'control_id'])
        batch_op.drop_column('content_hash')
