"""Tables the panel owns: accounts, their users, sessions and rate counters."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from ddmail_common.db import Base


class Account(Base):
    __tablename__ = "web_accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    gratis: Mapped[bool] = mapped_column(Boolean, default=False)
    payment_reference: Mapped[str] = mapped_column(String(32), unique=True)
    disabled_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_charged_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class User(Base):
    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("web_accounts.id"), index=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id PHC string
    keyfile_digest: Mapped[str] = mapped_column(String(64))  # SHA-256: the file is 512 random bits
    # The account's mailbox recovery secret, sealed under a key derived from this user's key file.
    recovery_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    totp_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer)


class Session(Base):
    """A login. Only the SHA-256 of the cookie's token is stored: the table alone logs nobody in."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    last_seen: Mapped[int] = mapped_column(Integer)
    # A TOTP secret being set up, sealed under the master key: it goes with the session (at
    # logout, at the next login), never into a cookie.
    totp_pending: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class PendingKeyfile(Base):
    """A just-registered user's key file until its one download; sealed under a key derived from
    a token that only the registering browser's cookie holds."""

    __tablename__ = "web_pending_keyfiles"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(32))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[int] = mapped_column(Integer)


class Counter(Base):
    """Fixed-window counters for throttling (keys never contain an IP address)."""

    __tablename__ = "web_counters"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_start: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)
