"""One way to show a moment to an operator: UTC, to the second, said so."""

from __future__ import annotations

import time


def utc_text(when: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when or 0))
