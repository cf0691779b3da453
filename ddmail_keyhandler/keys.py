"""Mailbox key pairs: create, unlock, re-wrap on password change, reset by recovery, destroy."""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ddmail_common.config import Argon2Settings
from ddmail_common.db import Database
from ddmail_common.errors import ApiError, conflict, not_found, rule_violated
from ddmail_keyhandler.models import MailboxKey, RecoveryKeyRow
from ddmail_keyhandler.wrapping import (
    RecoveryKey,
    WrongSecret,
    unwrap_for_recovery,
    unwrap_with_password,
    wrap_for_recovery,
    wrap_with_password,
)

# Unambiguous characters; 24 of them carry about 137 bits.
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # noqa: S105
PASSWORD_LENGTH = 24


def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def wrong_password() -> ApiError:
    return ApiError(401, "wrong_password", "The mailbox password is wrong.")


@dataclass(frozen=True)
class Unlocked:
    private_key: str  # base64 of the PKCS8 PEM, the form Dovecot takes
    public_key: str


class KeyStore:
    def __init__(self, db: Database, argon2: Argon2Settings) -> None:
        self.db = db
        self.argon2 = argon2
        # Unknown users cost one argon2 run too, so timing does not tell which addresses exist.
        self._decoy = wrap_with_password(b"decoy", generate_password(), "decoy", argon2)

    def set_recovery_key(self, account: str, secret: bytes) -> None:
        key = RecoveryKey.create(secret, self.argon2)
        # Insert first, no read before: on SQLite a read and then a write in one transaction
        # fails outright ("database is locked") when another registration wrote in between.
        try:
            with self.db.session() as s:
                s.add(
                    RecoveryKeyRow(
                        account=account,
                        public=key.public,
                        salt=key.salt,
                        memory_kib=key.params.memory_kib,
                        time_cost=key.params.time_cost,
                        parallelism=key.params.parallelism,
                    )
                )
        except IntegrityError:
            raise conflict(
                "This account already has a recovery key.", "recovery_key_exists"
            ) from None

    def remove_recovery_key(self, account: str) -> bool:
        """Forget a deleted account's recovery key; False if there was none (idempotent). Refused
        while a mailbox key of the account exists: those are shredded first."""
        with self.db.session() as s:
            left = s.execute(select(MailboxKey.mailbox_id).where(MailboxKey.account == account))
            if left.first() is not None:
                raise rule_violated(
                    "The account still has mailbox keys; remove its mailboxes first.",
                    "account_has_mailboxes",
                )
            result = s.execute(delete(RecoveryKeyRow).where(RecoveryKeyRow.account == account))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def _recovery_key(self, account: str) -> RecoveryKey:
        with self.db.session() as s:
            row = s.get(RecoveryKeyRow, account)
            if row is None:
                raise rule_violated("The account has no recovery key yet.", "no_recovery_key")
            params = Argon2Settings(row.memory_kib, row.time_cost, row.parallelism)
            return RecoveryKey(public=row.public, salt=row.salt, params=params)

    def create(self, mailbox_id: str, address: str, account: str) -> tuple[str, str]:
        """Make the key pair; return (public key, new password). The password exists only in
        the answer: what is stored is the private key wrapped under it."""
        recovery = self._recovery_key(account)
        private = ec.generate_private_key(ec.SECP521R1())
        private_pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        public_pem = private.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        public_b64 = base64.b64encode(public_pem).decode()
        password = generate_password()
        now = int(time.time())
        row = MailboxKey(
            mailbox_id=mailbox_id,
            address=address,
            account=account,
            public_key=public_b64,
            password_wrap=wrap_with_password(private_pem, password, mailbox_id, self.argon2),
            recovery_wrap=wrap_for_recovery(private_pem, recovery, mailbox_id),
            created_at=now,
            updated_at=now,
        )
        with self.db.session() as s:
            existing = s.execute(
                select(MailboxKey.mailbox_id).where(
                    (MailboxKey.mailbox_id == mailbox_id) | (MailboxKey.address == address)
                )
            ).first()
            if existing is not None:
                raise conflict("A key for this mailbox exists already.", "key_exists")
            s.add(row)
        return public_b64, password

    def _row(self, address: str) -> MailboxKey | None:
        with self.db.session() as s:
            return s.execute(select(MailboxKey).where(MailboxKey.address == address)).scalar()

    def unlock(self, address: str, password: str) -> Unlocked:
        row = self._row(address)
        if row is None:
            with contextlib.suppress(WrongSecret):
                unwrap_with_password(self._decoy, password, "decoy")
            raise not_found("No such mailbox.", "unknown_user")
        try:
            private_pem = unwrap_with_password(row.password_wrap, password, row.mailbox_id)
        except WrongSecret:
            raise wrong_password() from None
        return Unlocked(base64.b64encode(private_pem).decode(), row.public_key)

    def _rewrap(self, row: MailboxKey, private_pem: bytes) -> str:
        password = generate_password()
        new_wrap = wrap_with_password(private_pem, password, row.mailbox_id, self.argon2)
        with self.db.session() as s:
            current = s.get(MailboxKey, row.mailbox_id)
            # The row changed or vanished meanwhile: do not resurrect or overwrite it.
            if current is None or current.password_wrap != row.password_wrap:
                raise conflict("The mailbox key changed meanwhile; try again.", "key_changed")
            current.password_wrap = new_wrap
            current.updated_at = int(time.time())
        return password

    def change_password(self, address: str, current_password: str) -> str:
        row = self._row(address)
        if row is None:
            raise not_found("No such mailbox.")
        try:
            private_pem = unwrap_with_password(row.password_wrap, current_password, row.mailbox_id)
        except WrongSecret:
            raise wrong_password() from None
        return self._rewrap(row, private_pem)

    def reset_password(self, address: str, recovery_secret: bytes) -> str:
        row = self._row(address)
        if row is None:
            raise not_found("No such mailbox.")
        recovery = self._recovery_key(row.account)
        try:
            private = recovery.private_key(recovery_secret)
            private_pem = unwrap_for_recovery(
                row.recovery_wrap, private, recovery.public, row.mailbox_id
            )
        except WrongSecret:
            raise ApiError(401, "wrong_recovery_secret", "The key file does not match.") from None
        return self._rewrap(row, private_pem)

    def destroy(self, mailbox_id: str) -> bool:
        """Crypto-shred: without its wraps the mailbox's mail can never be read again."""
        with self.db.session() as s:
            result = s.execute(delete(MailboxKey).where(MailboxKey.mailbox_id == mailbox_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def public_key(self, mailbox_id: str) -> str | None:
        with self.db.session() as s:
            row = s.get(MailboxKey, mailbox_id)
            return None if row is None else row.public_key
