"""openpgp expiry warnings

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 20:45:05.754541
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("keyhandler_openpgp_activations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expiry_warned", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("keyhandler_openpgp_activations", schema=None) as batch_op:
        batch_op.drop_column("expiry_warned")
