"""disabled accounts receive mail like enabled ones

Their addresses used to answer 450 4.2.1 at RCPT, which told any sender who probed an address
that its owner had not paid. Mail to a disabled account is now accepted and stored (encrypted at
rest like all mail); its mailboxes still cannot log in or send (mail_senders and Dovecot's deny
passdb on mail_recipient_access are unchanged). See docs/design-notes.md item 29.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# As in 0002: every active mailbox of an enabled domain, whatever its account's funds.
MAILBOXES = import_module("ddmail_common.migrations.versions.0002_mail_views").VIEWS[
    "mail_mailboxes"
]


def _replace(name: str, query: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Keeps the SELECT grant of the mail daemons' role.
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
    else:
        op.execute(f"DROP VIEW {name}")
        op.execute(f"CREATE VIEW {name} AS {query}")


def upgrade() -> None:
    _replace("mail_mailboxes", MAILBOXES)


def downgrade() -> None:
    previous = import_module("ddmail_common.migrations.versions.0004_funds_and_account_states")
    _replace("mail_mailboxes", previous.VIEWS["mail_mailboxes"])
