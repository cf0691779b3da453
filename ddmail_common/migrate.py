"""Bring a database to the newest schema (the same migrations on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

# The only relations Postfix and Dovecot may read (migrations 0002, 0004, 0008).
MAIL_VIEWS = (
    "mail_domains",
    "mail_mailboxes",
    "mail_aliases",
    "mail_senders",
    "mail_recipient_access",
    "mail_operator_aliases",  # migration 0008
)


def alembic_config(db_url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    return cfg


def upgrade(db_url: str) -> None:
    command.upgrade(alembic_config(db_url), "head")
