"""Per-login send limit: recipients per sliding window, keyed by the SASL login alone (no IP
address is ever looked at). Kept in memory: a restart forgets the counts, which only ever
errs towards letting mail through."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SendLimit:
    def __init__(
        self, recipients: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.recipients = recipients
        self.window = window_seconds
        self.clock = clock
        self._sent: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def _used(self, login: str, now: float) -> int:
        entries = self._sent.get(login)
        if entries is None:
            return 0
        while entries and entries[0][0] <= now - self.window:
            entries.popleft()
        if not entries:
            del self._sent[login]  # idle logins cost no memory
            return 0
        return sum(count for _, count in entries)

    def exhausted(self, login: str) -> bool:
        """True if LOGIN may not start another message now."""
        with self._lock:
            return self._used(login, self.clock()) >= self.recipients

    def take(self, login: str, count: int) -> bool:
        """Count COUNT recipients for LOGIN if they fit in the window; False if they do not."""
        with self._lock:
            now = self.clock()
            if self._used(login, now) + count > self.recipients:
                return False
            self._sent.setdefault(login, deque()).append((now, count))
            return True
