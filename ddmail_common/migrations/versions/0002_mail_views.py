"""Read-only views for Postfix and Dovecot

Postfix's lookup maps and Dovecot's userdb read these views, never the backend's tables, so the
mail daemons see only active, enabled data and only the columns they need.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS = {
    "mail_domains": """
        SELECT d.name AS domain FROM backend_domains d
        WHERE d.enabled = TRUE AND (d.kind = 'global' OR d.verified = TRUE)""",
    "mail_mailboxes": """
        SELECT m.address AS address, m.public_key AS public_key
        FROM backend_mailboxes m JOIN backend_domains d ON d.id = m.domain_id
        WHERE m.state = 'active' AND d.enabled = TRUE""",
    "mail_aliases": """
        SELECT a.address AS address, ad.destination AS destination
        FROM backend_aliases a
        JOIN backend_alias_destinations ad ON ad.alias_id = a.id
        JOIN backend_domains d ON d.id = a.domain_id
        WHERE d.enabled = TRUE""",
    # A mailbox may send as itself, and as any alias of its own account.
    "mail_senders": """
        SELECT m.address AS sender, m.address AS login
        FROM backend_mailboxes m WHERE m.state = 'active'
        UNION
        SELECT a.address AS sender, m.address AS login
        FROM backend_aliases a JOIN backend_mailboxes m ON m.account = a.account
        WHERE m.state = 'active'""",
}


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
