"""outbox: statuses superseded (a later version reached the peer) and skipped (an admin's decision)

Revision ID: 0012_outbox_superseded
Revises: 0011_birth_date_precision
"""

from __future__ import annotations

from alembic import op

revision = '0012_outbox_superseded'
down_revision = '0011_birth_date_precision'
branch_labels = None
depends_on = None

OLD = "status IN ('pending', 'sent', 'acked', 'failed')"
NEW = "status IN ('pending', 'sent', 'acked', 'failed', 'superseded', 'skipped')"


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_outbox_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_outbox_status'), NEW)


def downgrade() -> None:
    # Superseded and skipped rows become failed: the code before 0012 holds every later version
    # of their study behind a failed one, so run the downgrade only with those resolved by hand.
    op.execute("UPDATE outbox SET status = 'failed' WHERE status IN ('superseded', 'skipped')")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_outbox_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_outbox_status'), OLD)
