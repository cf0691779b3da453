"""OpenPGP public keys and their activations (keyhandler)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 20:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyhandler_openpgp_keys",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("primary_algo", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("uids", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=True),
        sa.Column("uploaded_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account", "fingerprint"),
    )
    op.create_table(
        "keyhandler_openpgp_activations",
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("activated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account", "fingerprint"],
            ["keyhandler_openpgp_keys.account", "keyhandler_openpgp_keys.fingerprint"],
            name="fk_keyhandler_openpgp_activations_key",
        ),
        sa.PrimaryKeyConstraint("address"),
    )
    with op.batch_alter_table("keyhandler_openpgp_activations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_keyhandler_openpgp_activations_account"), ["account"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("keyhandler_openpgp_activations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keyhandler_openpgp_activations_account"))
    op.drop_table("keyhandler_openpgp_activations")
    op.drop_table("keyhandler_openpgp_keys")
