"""funds and account states

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 19:29:33.917492
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# Mail of a disabled account is refused with a temporary error (the sender retries while the
# owner adds funds); its mailboxes cannot log in or send.
ENABLED = (
    "NOT EXISTS (SELECT 1 FROM backend_accounts s WHERE s.account = {t}.account AND NOT s.enabled)"
)
VIEWS = {
    "mail_mailboxes": f"""
        SELECT m.address AS address, m.public_key AS public_key
        FROM backend_mailboxes m JOIN backend_domains d ON d.id = m.domain_id
        WHERE m.state = 'active' AND d.enabled = TRUE AND {ENABLED.format(t="m")}""",
    "mail_senders": f"""
        SELECT m.address AS sender, m.address AS login
        FROM backend_mailboxes m WHERE m.state = 'active' AND {ENABLED.format(t="m")}
        UNION
        SELECT a.address AS sender, m.address AS login
        FROM backend_aliases a JOIN backend_mailboxes m ON m.account = a.account
        WHERE m.state = 'active' AND {ENABLED.format(t="m")}""",
    "mail_recipient_access": """
        SELECT m.address AS address, '450 4.2.1 Mailbox temporarily unavailable' AS action
        FROM backend_mailboxes m JOIN backend_accounts s ON s.account = m.account
        WHERE NOT s.enabled
        UNION
        SELECT a.address AS address, '450 4.2.1 Mailbox temporarily unavailable' AS action
        FROM backend_aliases a JOIN backend_accounts s ON s.account = a.account
        WHERE NOT s.enabled""",
}
OLD_VIEWS = ("mail_mailboxes", "mail_senders")


def upgrade() -> None:
    op.create_table(
        "backend_accounts",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.create_table(
        "web_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("web_ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_ledger_account"), ["account"], unique=False)

    op.create_table(
        "web_vouchers",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("redeemed_by", sa.String(length=32), nullable=True),
        sa.Column("redeemed_at", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    with op.batch_alter_table("web_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("last_charged_at", sa.Integer(), nullable=True))

    for name in OLD_VIEWS:
        op.execute(f"DROP VIEW {name}")
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    from importlib import import_module

    previous = import_module("ddmail_common.migrations.versions.0002_mail_views").VIEWS
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
    for name in OLD_VIEWS:
        op.execute(f"CREATE VIEW {name} AS {previous[name]}")
    with op.batch_alter_table("web_accounts", schema=None) as batch_op:
        batch_op.drop_column("last_charged_at")
        batch_op.drop_column("disabled_at")

    op.drop_table("web_vouchers")
    with op.batch_alter_table("web_ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_ledger_account"))

    op.drop_table("web_ledger")
    op.drop_table("backend_accounts")
