"""Tables the keyhandler owns: mailbox key pairs (private half only wrapped) and account
recovery public keys."""

from __future__ import annotations

from sqlalchemy import Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ddmail_common.db import Base
from ddmail_common.idempotency import idempotency_table


class MailboxKey(Base):
    __tablename__ = "keyhandler_mailbox_keys"

    mailbox_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[str] = mapped_column(Text)  # base64 of the SPKI PEM, as Dovecot takes it
    password_wrap: Mapped[bytes] = mapped_column(LargeBinary)
    recovery_wrap: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[int] = mapped_column(Integer)


class RecoveryKeyRow(Base):
    __tablename__ = "keyhandler_recovery_keys"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    public: Mapped[bytes] = mapped_column(LargeBinary)
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    memory_kib: Mapped[int] = mapped_column(Integer)
    time_cost: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer)


idempotency = idempotency_table("keyhandler", Base.metadata)
