"""The funds ledger and prepaid vouchers (owned by the panel)."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ddmail_common.db import Base


class LedgerEntry(Base):
    """Money in (positive) and out (negative), in cents; the balance is the sum."""

    __tablename__ = "web_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # credit, voucher, charge
    amount_cents: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(200))


class Voucher(Base):
    """Only a hash of the code is stored: a database leak does not hand out money."""

    __tablename__ = "web_vouchers"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer)
    redeemed_by: Mapped[str | None] = mapped_column(String(32))
    redeemed_at: Mapped[int | None] = mapped_column(Integer)
