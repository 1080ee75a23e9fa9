"""users: the name in parts (family, given, middle, prefix, suffix, degree); report_versions:
the signer's name in parts at signing (signer_parts)

Revision ID: 0013_person_names
Revises: 0012_outbox_superseded
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_person_names'
down_revision = '0012_outbox_superseded'
branch_labels = None
depends_on = None

_PARTS = (('family_name', 64), ('given_name', 64), ('middle_name', 64), ('name_prefix', 32), ('name_suffix', 32),
          ('degree', 64))


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        for name, length in _PARTS:
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=False, server_default=''))
    with op.batch_alter_table('report_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signer_parts', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('report_versions', schema=None) as batch_op:
        batch_op.drop_column('signer_parts')
    with op.batch_alter_table('users', schema=None) as batch_op:
        for name, _ in reversed(_PARTS):
            batch_op.drop_column(name)
