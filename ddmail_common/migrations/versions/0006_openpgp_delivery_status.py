"""openpgp delivery status

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 20:07:35.257024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("keyhandler_openpgp_activations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failing_since", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("failure", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("keyhandler_openpgp_activations", schema=None) as batch_op:
        batch_op.drop_column("failure")
        batch_op.drop_column("failing_since")
