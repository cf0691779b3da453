"""domain claims, re-verification and operator routes

Pending domain claims move to their own table (several accounts may claim one name; the first
to verify gets the domain). Account domains get re-verification columns. Operator addresses
(postmaster@, abuse@, report addresses) get a table and a view that Postfix reads as a second
virtual alias map.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ADDRESS = "o.local_part || '@' || d.name"
# Global domains: every operator address. A customer's verified domain: the every-domain ones
# (postmaster, abuse), unless the customer has a mailbox or alias of that name.
MAIL_OPERATOR_ALIASES = f"""
    SELECT {_ADDRESS} AS address, o.destination AS destination
    FROM backend_operator_routes o JOIN backend_domains d
      ON d.enabled = TRUE AND (d.kind = 'global' OR (d.verified = TRUE AND o.every_domain = TRUE))
    WHERE NOT EXISTS (SELECT 1 FROM backend_mailboxes m WHERE m.address = {_ADDRESS})
      AND NOT EXISTS (SELECT 1 FROM backend_aliases a WHERE a.address = {_ADDRESS})"""


def upgrade() -> None:
    op.create_table(
        "backend_domain_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("superseded_at", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "account", name="uq_backend_domain_claims"),
    )
    op.create_index("ix_backend_domain_claims_name", "backend_domain_claims", ["name"])
    op.create_index("ix_backend_domain_claims_account", "backend_domain_claims", ["account"])
    # Unverified account domains become claims (they have no mailboxes: addresses need a
    # verified domain).
    op.execute(
        "INSERT INTO backend_domain_claims (name, account, token, created_at) "
        "SELECT name, account, token, created_at FROM backend_domains "
        "WHERE kind = 'account' AND verified = FALSE AND token IS NOT NULL"
    )
    op.execute(
        "DELETE FROM backend_domains WHERE kind = 'account' AND verified = FALSE "
        "AND id NOT IN (SELECT domain_id FROM backend_mailboxes) "
        "AND id NOT IN (SELECT domain_id FROM backend_aliases)"
    )
    op.add_column("backend_domains", sa.Column("checked_at", sa.Integer(), nullable=True))
    op.add_column("backend_domains", sa.Column("suspended_at", sa.Integer(), nullable=True))
    op.add_column("backend_domains", sa.Column("restored_at", sa.Integer(), nullable=True))
    op.create_table(
        "backend_operator_routes",
        sa.Column("local_part", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=254), nullable=False),
        sa.Column("every_domain", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("local_part"),
    )
    op.execute(f"CREATE VIEW mail_operator_aliases AS {MAIL_OPERATOR_ALIASES}")


def downgrade() -> None:
    op.execute("DROP VIEW mail_operator_aliases")
    op.drop_table("backend_operator_routes")
    # Plain DROP COLUMN (SQLite >= 3.35): batch mode's copy-and-rename of the table fails on
    # SQLite while the mail views refer to it.
    for column in ("restored_at", "suspended_at", "checked_at"):
        op.execute(f"ALTER TABLE backend_domains DROP COLUMN {column}")
    op.execute(
        "INSERT INTO backend_domains (name, kind, account, enabled, verified, token, created_at) "
        "SELECT name, 'account', account, TRUE, FALSE, token, MIN(created_at) "
        "FROM backend_domain_claims c WHERE NOT EXISTS "
        "(SELECT 1 FROM backend_domains d WHERE d.name = c.name) "
        "AND c.id = (SELECT MIN(id) FROM backend_domain_claims c2 WHERE c2.name = c.name) "
        "GROUP BY name, account, token"
    )
    op.drop_index("ix_backend_domain_claims_account", table_name="backend_domain_claims")
    op.drop_index("ix_backend_domain_claims_name", table_name="backend_domain_claims")
    op.drop_table("backend_domain_claims")
