"""openpgp key unusable after an update

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 21:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("keyhandler_openpgp_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unusable", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("keyhandler_openpgp_keys", schema=None) as batch_op:
        batch_op.drop_column("unusable")
