"""What a browser without JavaScript reads from the panel's pages: the CSRF token, the one-time
codes shown in `<code id=...>`, and what registration hands out. Standard library only, so the
check script inside the deployment VM (system Python, no Flask) uses the same parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CODE = re.compile(r'<code id="([a-z-]+)">([^<]+)</code>')


def csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


def codes(html: str) -> dict[str, str]:
    return dict(CODE.findall(html))


@dataclass
class Registered:
    account: str
    username: str
    password: str
    keyfile: bytes
