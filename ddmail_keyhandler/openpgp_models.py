"""Tables the keyhandler owns for OpenPGP: uploaded public keys and which mailbox uses which.

A key belongs to one account (the same key may be uploaded by several accounts, as separate
rows: nothing tells one account that another has it). An activation names a mailbox address
and one key of the same account; the composite foreign key makes a key of another account
impossible even for a buggy caller, and a key cannot be deleted while a mailbox uses it.
"""

from __future__ import annotations

from sqlalchemy import ForeignKeyConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ddmail_common.db import Base


class OpenPgpKey(Base):
    __tablename__ = "keyhandler_openpgp_keys"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # upper-case hex
    key_version: Mapped[int] = mapped_column(Integer)  # 4 or 6
    primary_algo: Mapped[str] = mapped_column(String(32))  # "ed25519", "rsa3072", ...
    public_key: Mapped[str] = mapped_column(Text)  # armored, exported minimal by gpg
    uids: Mapped[str] = mapped_column(Text)  # JSON list of user ids, for display only
    created_at: Mapped[int] = mapped_column(Integer)  # the key's own creation time
    # When the key stops being able to encrypt (primary or last usable encryption subkey
    # expires); None: never.
    expires_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    uploaded_at: Mapped[int] = mapped_column(Integer)
    # Why the key cannot encrypt although it has not expired (a re-upload revoked it, say);
    # None: it can. Mail to mailboxes using it is held back, never stored unencrypted.
    unusable: Mapped[str | None] = mapped_column(String(200), nullable=True)


class OpenPgpActivation(Base):
    __tablename__ = "keyhandler_openpgp_activations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["account", "fingerprint"],
            ["keyhandler_openpgp_keys.account", "keyhandler_openpgp_keys.fingerprint"],
            name="fk_keyhandler_openpgp_activations_key",
        ),
    )

    address: Mapped[str] = mapped_column(String(254), primary_key=True)  # one key per mailbox
    account: Mapped[str] = mapped_column(String(64), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    activated_at: Mapped[int] = mapped_column(Integer)
    # Set by the delivery stage while mail for this mailbox is held back (fail closed).
    failing_since: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failure: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The key's expiry the owner was last warned about (one warning per expiry date).
    expiry_warned: Mapped[int | None] = mapped_column(Integer, nullable=True)
