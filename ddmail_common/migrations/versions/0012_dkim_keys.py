"""DKIM key pairs (public halves and their rotation state)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backend_dkim_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain", sa.String(253), nullable=False, index=True),
        sa.Column("selector", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("active_at", sa.Integer(), nullable=True),
        sa.Column("retire_at", sa.Integer(), nullable=True),
        sa.UniqueConstraint("domain", "selector", name="uq_backend_dkim_keys"),
    )


def downgrade() -> None:
    op.drop_table("backend_dkim_keys")
