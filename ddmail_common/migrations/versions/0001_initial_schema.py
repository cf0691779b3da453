"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 18:45:42.593585
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backend_domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("backend_domains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backend_domains_account"), ["account"], unique=False)

    op.create_table(
        "backend_idempotency",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("backend_idempotency", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_backend_idempotency_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "backend_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_run_at", sa.Integer(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("backend_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_backend_jobs_next_run_at"), ["next_run_at"], unique=False
        )

    op.create_table(
        "backend_tombstones",
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("removed_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "keyhandler_idempotency",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("keyhandler_idempotency", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_keyhandler_idempotency_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "keyhandler_mailbox_keys",
        sa.Column("mailbox_id", sa.String(length=36), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("password_wrap", sa.LargeBinary(), nullable=False),
        sa.Column("recovery_wrap", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id"),
        sa.UniqueConstraint("address"),
    )
    with op.batch_alter_table("keyhandler_mailbox_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_keyhandler_mailbox_keys_account"), ["account"], unique=False
        )

    op.create_table(
        "keyhandler_recovery_keys",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("public", sa.LargeBinary(), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("memory_kib", sa.Integer(), nullable=False),
        sa.Column("time_cost", sa.Integer(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.create_table(
        "backend_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["backend_domains.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    with op.batch_alter_table("backend_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backend_aliases_account"), ["account"], unique=False)

    op.create_table(
        "backend_mailboxes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["backend_domains.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    with op.batch_alter_table("backend_mailboxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backend_mailboxes_account"), ["account"], unique=False)

    op.create_table(
        "backend_alias_destinations",
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=254), nullable=False),
        sa.ForeignKeyConstraint(["alias_id"], ["backend_aliases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("alias_id", "destination"),
    )


def downgrade() -> None:
    op.drop_table("backend_alias_destinations")
    with op.batch_alter_table("backend_mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backend_mailboxes_account"))

    op.drop_table("backend_mailboxes")
    with op.batch_alter_table("backend_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backend_aliases_account"))

    op.drop_table("backend_aliases")
    op.drop_table("keyhandler_recovery_keys")
    with op.batch_alter_table("keyhandler_mailbox_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keyhandler_mailbox_keys_account"))

    op.drop_table("keyhandler_mailbox_keys")
    with op.batch_alter_table("keyhandler_idempotency", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keyhandler_idempotency_created_at"))

    op.drop_table("keyhandler_idempotency")
    op.drop_table("backend_tombstones")
    with op.batch_alter_table("backend_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backend_jobs_next_run_at"))

    op.drop_table("backend_jobs")
    with op.batch_alter_table("backend_idempotency", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backend_idempotency_created_at"))

    op.drop_table("backend_idempotency")
    with op.batch_alter_table("backend_domains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backend_domains_account"))

    op.drop_table("backend_domains")
