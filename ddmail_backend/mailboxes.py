"""Mailboxes in the order of docs/architecture.md §6: no half-made mailbox, no key without one.

add:    reserve the address (pending, invisible to Postfix/Dovecot) → keyhandler makes the key
        → mark active with its public key. Any failure undoes the earlier steps.
remove: mark deleting (Postfix stops accepting at once) → a job destroys the key (crypto-shred),
        erases the maildir, tombstones the address and drops the row; retried until done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ddmail_backend.addresses import check_new_address, parse_address
from ddmail_backend.jobs import JobQueue
from ddmail_backend.models import (
    ACTIVE,
    DELETING,
    PENDING,
    Alias,
    AliasDestination,
    Mailbox,
    Tombstone,
)
from ddmail_common.client import ServiceClient
from ddmail_common.db import Database
from ddmail_common.errors import ApiError, not_found

log = logging.getLogger(__name__)
REMOVE_JOB = "remove_mailbox"
STALE_PENDING_SECONDS = 600


@dataclass(frozen=True)
class NewMailbox:
    id: str
    address: str
    password: str


def _bytes_under(root: Path) -> int:
    """Sizes of the files under ROOT (none if it does not exist yet). Dovecot renames and
    expunges while this walks: a file gone meanwhile counts nothing."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


class Mailboxes:
    def __init__(
        self,
        db: Database,
        keyhandler: ServiceClient,
        jobs: JobQueue,
        mail_root: Path,
        reserved_extra: Iterable[str] = (),
    ) -> None:
        self.db = db
        self.keyhandler = keyhandler
        self.jobs = jobs
        self.mail_root = mail_root
        self.reserved_extra = frozenset(reserved_extra)
        jobs.register(REMOVE_JOB, self._remove_step)

    def set_recovery_key(self, account: str, secret: str) -> None:
        self.keyhandler.call("POST", "/v1/recovery-keys", {"account": account, "secret": secret})

    def add(self, account: str, address_text: str) -> NewMailbox:
        address = parse_address(address_text)
        mailbox_id = str(uuid.uuid4())
        now = int(time.time())
        with self.db.session() as s:
            domain = check_new_address(s, account, address, self.reserved_extra)
            s.add(
                Mailbox(
                    id=mailbox_id,
                    account=account,
                    address=address,
                    domain_id=domain.id,
                    state=PENDING,
                    public_key=None,
                    created_at=now,
                    updated_at=now,
                )
            )
        try:
            made = self.keyhandler.call(
                "POST",
                "/v1/keys",
                {"mailbox_id": mailbox_id, "address": address, "account": account},
            )
        except ApiError as exc:
            # A refused connection or a 4xx answer means no key was made; otherwise it may
            # have been, and the undo must destroy it.
            self._undo_pending(
                mailbox_id, key_may_exist=exc.code != "unreachable" and exc.status >= 500
            )
            raise
        try:
            with self.db.session() as s:
                row = s.get(Mailbox, mailbox_id)
                assert row is not None
                row.state = ACTIVE
                row.public_key = str(made["public_key"])
                row.updated_at = int(time.time())
        except Exception:
            self._undo_pending(mailbox_id)
            raise
        return NewMailbox(mailbox_id, address, str(made["password"]))

    def _undo_pending(self, mailbox_id: str, key_may_exist: bool = True) -> None:
        """Destroy a possibly-made key, then drop the pending row. If the keyhandler cannot be
        reached the row stays pending (still invisible to mail) and reap_pending retries."""
        if key_may_exist:
            try:
                self.keyhandler.call("POST", "/v1/keys/destroy", {"mailbox_id": mailbox_id})
            except ApiError:
                log.warning("could not undo a pending mailbox yet; the reaper will retry")
                return
        with self.db.session() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is not None and row.state == PENDING:
                s.delete(row)

    def reap_pending(self) -> None:
        """Finish undoing mailboxes whose creation was interrupted (crash, timeout)."""
        horizon = int(time.time()) - STALE_PENDING_SECONDS
        with self.db.session() as s:
            stale = list(
                s.execute(
                    select(Mailbox.id).where(Mailbox.state == PENDING, Mailbox.created_at < horizon)
                ).scalars()
            )
        for mailbox_id in stale:
            self._undo_pending(mailbox_id)

    def list(self, account: str) -> list[dict[str, object]]:
        with self.db.session() as s:
            rows = s.execute(
                select(Mailbox)
                .where(Mailbox.account == account, Mailbox.state != PENDING)
                .order_by(Mailbox.address)
            ).scalars()
            return [{"id": m.id, "address": m.address, "state": m.state} for m in rows]

    def owned(self, account: str, address_text: str) -> Mailbox:
        address = parse_address(address_text)
        with self.db.session() as s:
            row = s.execute(
                select(Mailbox).where(
                    Mailbox.address == address, Mailbox.account == account, Mailbox.state == ACTIVE
                )
            ).scalar()
        if row is None:
            raise not_found("No such mailbox in this account.")
        return row

    def change_password(self, account: str, address: str, current_password: str) -> str:
        mailbox = self.owned(account, address)
        answer = self.keyhandler.call(
            "POST",
            "/v1/keys/password",
            {"address": mailbox.address, "current_password": current_password},
        )
        return str(answer["password"])

    def reset_password(self, account: str, address: str, recovery_secret: str) -> str:
        mailbox = self.owned(account, address)
        answer = self.keyhandler.call(
            "POST",
            "/v1/keys/reset",
            {"address": mailbox.address, "recovery_secret": recovery_secret},
        )
        return str(answer["password"])

    def remove(self, account: str, address: str) -> str:
        """Start removal; return 'removed' or 'deleting' (finishing in the background)."""
        mailbox = self.owned(account, address)
        with self.db.session() as s:
            row = s.get(Mailbox, mailbox.id)
            assert row is not None
            row.state = DELETING
            row.updated_at = int(time.time())
            job = self.jobs.enqueue(REMOVE_JOB, {"mailbox_id": mailbox.id})
        return "removed" if self.jobs.run_one(job) else DELETING

    def storage(self, account: str) -> dict[str, int]:
        """Bytes on disk of each of the account's mailboxes, by address: the encrypted mail and
        its indexes, what monthly charges are based on."""
        used = {}
        for mailbox in self.list(account):
            address = str(mailbox["address"])
            used[address] = _bytes_under(self.maildir(address))
        return used

    def maildir(self, address: str) -> Path:
        local, _, domain = address.rpartition("@")
        path = (self.mail_root / domain / local).resolve()
        if path.parent.parent != self.mail_root.resolve():
            raise ValueError("maildir outside the mail root")
        return path

    def _remove_step(self, payload: dict[str, object]) -> None:
        mailbox_id = str(payload["mailbox_id"])
        with self.db.session() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is None:
                return
            address = row.address
        # 1. crypto-shred: the stored mail is unreadable from here on, also in old backups.
        self.keyhandler.call("POST", "/v1/keys/destroy", {"mailbox_id": mailbox_id})
        # 2. erase the ciphertext.
        maildir = self.maildir(address)
        if maildir.exists():
            shutil.rmtree(maildir)
        # 3. tombstone, drop alias destinations pointing here, drop the row.
        with self.db.session() as s:
            if s.get(Tombstone, address) is None:
                s.add(Tombstone(address=address, removed_at=int(time.time())))
            aliases = (
                s.execute(
                    select(Alias)
                    .join(AliasDestination)
                    .where(AliasDestination.destination == address)
                )
                .scalars()
                .all()
            )
            for alias in aliases:
                alias.destinations = [d for d in alias.destinations if d.destination != address]
                if not alias.destinations:
                    s.add(Tombstone(address=alias.address, removed_at=int(time.time())))
                    s.delete(alias)
            row = s.get(Mailbox, mailbox_id)
            if row is not None:
                s.delete(row)
