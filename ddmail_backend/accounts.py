"""Forgetting a deleted account: what the backend and the keyhandler keep per account rather than
per address (its enabled state, its recovery key, its OpenPGP keys)."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from ddmail_backend.models import AccountState, Alias, Domain, Mailbox
from ddmail_backend.openpgp import OpenPgp
from ddmail_common.client import ServiceClient
from ddmail_common.db import Database
from ddmail_common.errors import rule_violated


class Accounts:
    def __init__(self, db: Database, keyhandler: ServiceClient, openpgp: OpenPgp) -> None:
        self.db = db
        self.keyhandler = keyhandler
        self.openpgp = openpgp

    def forget(self, account: str) -> None:
        """Remove the account's last rows here and in the keyhandler. Every step is idempotent,
        so a retry after a failure finishes the job. Refused while the account still has
        mailboxes (also ones being shredded), aliases or domains: they are removed first,
        each by its own path (crypto-shredding, tombstones)."""
        with self.db.session() as s:
            left = sum(
                s.execute(
                    select(func.count()).select_from(table).where(table.account == account)
                ).scalar_one()
                for table in (Mailbox, Alias, Domain)
            )
        if left:
            raise rule_violated(
                "Remove the account's mailboxes, aliases and domains first; a mailbox being "
                "removed finishes in the background, try again in a moment.",
                "account_in_use",
            )
        self.openpgp.purge(account)
        self.keyhandler.call("POST", "/v1/recovery-keys/remove", {"account": account})
        with self.db.session() as s:
            s.execute(delete(AccountState).where(AccountState.account == account))
