"""Who may open an account right now, without knowing who is asking (no IP address, no CAPTCHA,
no JavaScript).

Nothing caps registrations per hour: one client could use such a cap up for everyone. What a
flood could exhaust is bounded instead:
- CPU: a registration's argon2 hash runs in the shared work pool and is shed first
  (ddmail_web.workslots);
- the database: at most `unfunded_accounts_max` accounts that have never been funded exist at
  once. When the room is full, a registration first removes the oldest account nobody ever
  logged into that is older than EVICTABLE_AFTER (make_room), so a flood that does not log into
  the accounts it makes only ever replaces its own, and people (who log in right after
  registering) still get in; the periodic job removes the rest after `purge_unclaimed_hours`.
  A registration with a voucher is funded from the start and never counted;
- under attack the operator sets `registration = "voucher"`: only voucher holders register.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session as DbSession

from ddmail_common.config import WebSettings
from ddmail_common.db import Database
from ddmail_web import funds
from ddmail_web.funds_models import LedgerEntry
from ddmail_web.models import Account
from ddmail_web.throttle import MAX_WINDOW, hit

LOCK = "registration-lock"
# A person logs in within minutes of registering; an account still unused after this long may
# give its place to a new registration when the room is full.
EVICTABLE_AFTER = 600


class Refused(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def count_never_funded(s: DbSession) -> int:
    paid = exists().where(LedgerEntry.account == Account.id, LedgerEntry.amount_cents > 0)
    query = select(func.count(Account.id)).where(Account.gratis.is_(False), ~paid)
    return int(s.execute(query).scalar_one())


def check(s: DbSession, settings: WebSettings, voucher: str | None) -> None:
    """Raise Refused if a new account may not be opened now."""
    if voucher is not None:
        if not funds.voucher_usable(s, voucher):
            raise Refused("This voucher code is not valid or was already used.", 400)
    elif settings.registration == "voucher":
        raise Refused("New accounts need a voucher code at the moment.", 403)
    elif room_is_full(s, settings):
        raise Refused(
            "Many new accounts are waiting for funds right now, so registration without a "
            "voucher pauses. Accounts nobody logs into are removed after a while: please come "
            "back later, or register with a voucher code.",
            503,
        )


def room_is_full(s: DbSession, settings: WebSettings) -> bool:
    return count_never_funded(s) >= settings.unfunded_accounts_max


def make_room(db: Database, remove: Callable[[str], None]) -> bool:
    """Remove (with REMOVE) the oldest account nobody ever used, if one is old enough."""
    with db.session() as s:
        account = funds.oldest_unclaimed(s, int(time.time()) - EVICTABLE_AFTER)
    if account is None:
        return False
    remove(account)
    return True


def serialize(s: DbSession) -> None:
    """Make concurrent registrations take turns for the rest of S's transaction (an atomic
    update of one row: a row lock on PostgreSQL, the write lock on SQLite), so the check above,
    run after it, sees every account made before and the cap is exact."""
    hit(s, LOCK, MAX_WINDOW)
