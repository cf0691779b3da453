"""Fixed-window counters in the database, keyed by things that are not IP addresses.

Every change is one atomic statement (an upsert with RETURNING), never read-modify-write:
concurrent requests in other workers each see their own, distinct new count."""

from __future__ import annotations

import time

from sqlalchemy import case, delete, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession

from ddmail_web.models import Counter

# The longest window any counter uses; a counter whose window started before that counts
# nothing any more.
MAX_WINDOW = 3600


def count(s: DbSession, key: str, window: int) -> int:
    row = s.get(Counter, key, populate_existing=True)
    now = int(time.time())
    if row is None or now - row.window_start >= window:
        return 0
    return row.count


def hit(s: DbSession, key: str, window: int) -> int:
    """Add one to KEY's window (starting a new window if the last one has passed); return the
    new count."""
    if window > MAX_WINDOW:
        raise ValueError("window longer than MAX_WINDOW: purge_stale would cut it short")
    now = int(time.time())
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    expired = Counter.window_start <= now - window
    upsert = insert(Counter).values(key=key, window_start=now, count=1)
    stmt = upsert.on_conflict_do_update(
        index_elements=[Counter.key],
        set_={
            "window_start": case((expired, literal(now)), else_=Counter.window_start),
            "count": case((expired, literal(1)), else_=Counter.count + 1),
        },
    ).returning(Counter.count)
    return int(s.execute(stmt).scalar_one())


def purge_stale(s: DbSession, now: int) -> int:
    """Remove counters whose window has passed (they count nothing; periodic job)."""
    result = s.execute(delete(Counter).where(Counter.window_start < now - MAX_WINDOW))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
