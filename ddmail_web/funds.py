"""Funds: the ledger, payment references, vouchers and the monthly charge.

An account pays per started GB of stored mail per month. When its funds run out it is disabled
(mail to it gets a temporary error, its users see only the funds page); after the grace period it
is deleted, mailboxes crypto-shredded first. Accounts never funded are purged the same way, and
sooner if nobody has ever logged into them (ddmail_web.admission).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.orm import Session as DbSession

from ddmail_common.client import ServiceClient
from ddmail_common.config import WebSettings
from ddmail_common.db import Database
from ddmail_web import audit
from ddmail_web.audit import AuditEntry
from ddmail_web.funds_models import LedgerEntry, Voucher
from ddmail_web.models import Account

MONTH = 30 * 24 * 3600
GB = 1024**3
VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
AMOUNT = re.compile(r"^(\d{1,7})(?:\.(\d{1,2}))?\Z")


class FundsError(ValueError):
    """Shown to the user or operator as is."""


def parse_amount(text: str) -> int:
    """'12.5' → 1250 cents."""
    match = AMOUNT.match(text.strip())
    if (
        not match
        or (cents := int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))) <= 0
    ):
        raise FundsError("Give an amount like 10 or 12.50.")
    return cents


def format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def money_text(cents: int, settings: WebSettings) -> str:
    """An amount as every page states it: always with the configured currency."""
    return f"{format_cents(cents)} {settings.currency}"


def price_text(settings: WebSettings) -> str:
    """The price as every page states it (pricing, funds and help pages alike); the unit is what
    Billing.monthly_charge really charges: every started GB of the account's mail, per month."""
    return f"{money_text(settings.price_cents_per_gb_month, settings)} per started GB per month"


# An account's balance (parameter "account"): the one sum of its ledger, also inside the
# settings overview's statement.
BALANCE = select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)).where(
    LedgerEntry.account == bindparam("account")
)


def balance(s: DbSession, account: str) -> int:
    return int(s.execute(BALANCE, {"account": account}).scalar_one())


def add_entry(s: DbSession, account: str, kind: str, cents: int, note: str) -> None:
    s.add(
        LedgerEntry(
            account=account, created_at=int(time.time()), kind=kind, amount_cents=cents, note=note
        )
    )


def _code_hash(code: str) -> str:
    normal = code.replace("-", "").replace(" ", "").upper()
    return hashlib.sha256(b"ddmail-voucher/v1\x00" + normal.encode()).hexdigest()


def create_vouchers(s: DbSession, count: int, cents: int) -> list[str]:
    if not 1 <= count <= 1000:
        raise FundsError("Create between 1 and 1000 vouchers at a time.")
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(VOUCHER_ALPHABET) for _ in range(20))  # 100 bits
        codes.append("-".join(raw[i : i + 5] for i in range(0, 20, 5)))
        s.add(
            Voucher(
                code_hash=_code_hash(codes[-1]),
                amount_cents=cents,
                created_at=int(time.time()),
                redeemed_by=None,
                redeemed_at=None,
            )
        )
    return codes


def voucher_usable(s: DbSession, code: str) -> bool:
    voucher = s.get(Voucher, _code_hash(code))
    return voucher is not None and voucher.redeemed_by is None


def redeem(s: DbSession, account: str, actor: str, code: str) -> int:
    # One conditional UPDATE claims the voucher: of concurrent redemptions exactly one sees
    # a row (a read, then a write would let several through where SQLite ignores FOR UPDATE).
    cents = s.execute(
        update(Voucher)
        .where(Voucher.code_hash == _code_hash(code), Voucher.redeemed_by.is_(None))
        .values(redeemed_by=account, redeemed_at=int(time.time()))
        .returning(Voucher.amount_cents)
    ).scalar()
    if cents is None:
        raise FundsError("This voucher code is not valid or was already used.")
    add_entry(s, account, "voucher", cents, "voucher")
    audit.append(s, account, actor, "voucher_redeemed", format_cents(cents))
    return int(cents)


DeleteAccount = Callable[[str, bool], None]


def oldest_unclaimed(s: DbSession, created_before: int) -> str | None:
    """The oldest account created before CREATED_BEFORE that was never funded, is not gratis
    and nobody ever logged into: what a registration flood leaves."""
    paid = exists().where(LedgerEntry.account == Account.id, LedgerEntry.amount_cents > 0)
    used = exists().where(AuditEntry.account == Account.id, AuditEntry.action == "login")
    query = (
        select(Account.id)
        .where(Account.gratis.is_(False), Account.created_at < created_before, ~paid, ~used)
        .order_by(Account.created_at)
        .limit(1)
    )
    return s.execute(query).scalar()


@dataclass
class Billing:
    db: Database
    backend: ServiceClient
    settings: WebSettings

    def set_enabled(self, account: str, enabled: bool, actor: str) -> None:
        """Mail first (the backend), then the panel: a failure leaves mail as it was."""
        with self.db.session() as s:
            if s.get(Account, account) is None:
                raise FundsError("No such account.")
        self.backend.call("POST", "/v1/accounts/state", {"account": account, "enabled": enabled})
        with self.db.session() as s:
            row = s.get(Account, account)
            if row is None:
                raise FundsError("No such account.")
            row.enabled = enabled
            row.disabled_at = None if enabled else int(time.time())
            audit.append(s, account, actor, "account_enabled" if enabled else "account_disabled")

    def credit(self, reference: str, cents: int) -> str:
        with self.db.session() as s:
            account = s.execute(
                select(Account).where(Account.payment_reference == reference.strip().upper())
            ).scalar()
            if account is None:
                raise FundsError("No account has this payment reference.")
            add_entry(s, account.id, "credit", cents, "payment")
            audit.append(s, account.id, "admin", "funds_credited", format_cents(cents))
            revive = not account.enabled and balance(s, account.id) > 0
        if revive:
            self.set_enabled(account.id, True, "admin")
        return account.id

    def monthly_charge(self, account: Account, now: int) -> None:
        used = int(self.backend.call("GET", f"/v1/usage?account={account.id}")["bytes"])
        cents = max(1, math.ceil(used / GB)) * self.settings.price_cents_per_gb_month
        with self.db.session() as s:
            row = s.get(Account, account.id)
            if row is None:
                return
            add_entry(s, row.id, "charge", -cents, f"{max(1, math.ceil(used / GB))} GB month")
            row.last_charged_at = now
            audit.append(s, row.id, "system", "funds_charged", format_cents(cents))
            short = balance(s, row.id) < 0
        if short:
            self.set_enabled(account.id, False, "system")

    def claimed(self, account: str) -> bool:
        """Someone has logged into it (a registration flood does not bother to)."""
        with self.db.session() as s:
            found = select(AuditEntry.id).where(
                AuditEntry.account == account, AuditEntry.action == "login"
            )
            return s.execute(found.limit(1)).first() is not None

    def run(self, delete_account: DeleteAccount, now: int | None = None) -> dict[str, int]:
        """Charge what is due, disable accounts without funds, delete those past the grace
        period and those never funded. DELETE_ACCOUNT(account_id, leave_trace) removes one
        account; only one nobody ever logged into goes without a trace."""
        now = int(time.time()) if now is None else now
        counts = {"charged": 0, "deleted": 0}
        with self.db.session() as s:
            accounts = list(s.execute(select(Account)).scalars())
            funded = {
                a.id
                for a in accounts
                if s.execute(
                    select(LedgerEntry.id).where(
                        LedgerEntry.account == a.id, LedgerEntry.amount_cents > 0
                    )
                ).first()
            }

        for account in accounts:
            if account.gratis:
                continue
            never_funded = account.id not in funded
            grace_over = (
                account.disabled_at is not None
                and now - account.disabled_at > self.settings.grace_days * 86400
            )
            age = now - account.created_at
            unclaimed = (
                never_funded
                and age > self.settings.purge_unclaimed_hours * 3600
                and not self.claimed(account.id)
            )
            stale = never_funded and age > self.settings.purge_unfunded_days * 86400
            if grace_over or stale or unclaimed:
                delete_account(account.id, not unclaimed)
                counts["deleted"] += 1
            elif (
                account.enabled
                and not never_funded
                and now - (account.last_charged_at or account.created_at) >= MONTH
            ):
                self.monthly_charge(account, now)
                counts["charged"] += 1
        return counts
