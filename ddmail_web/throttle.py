"""Fixed-window counters in the database, keyed by things that are not IP addresses."""

from __future__ import annotations

import time

from sqlalchemy import delete
from sqlalchemy.orm import Session as DbSession

from ddmail_web.models import Counter

# The longest window any counter uses (registrations per hour); a counter whose window started
# before that counts nothing any more.
MAX_WINDOW = 3600


def count(s: DbSession, key: str, window: int) -> int:
    row = s.get(Counter, key)
    now = int(time.time())
    if row is None or now - row.window_start >= window:
        return 0
    return row.count


def hit(s: DbSession, key: str, window: int) -> int:
    """Add one to KEY's window; return the new count."""
    if window > MAX_WINDOW:
        raise ValueError("window longer than MAX_WINDOW: purge_stale would cut it short")
    now = int(time.time())
    row = s.get(Counter, key)
    if row is None:
        s.add(Counter(key=key, window_start=now, count=1))
        return 1
    if now - row.window_start >= window:
        row.window_start, row.count = now, 1
    else:
        row.count += 1
    return row.count


def purge_stale(s: DbSession, now: int) -> int:
    """Remove counters whose window has passed (they count nothing; periodic job)."""
    result = s.execute(delete(Counter).where(Counter.window_start < now - MAX_WINDOW))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
