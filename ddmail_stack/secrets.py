"""Secret files of a local stack: created once, 0600, never printed."""

from __future__ import annotations

import secrets
from pathlib import Path

from ddmail_common.files import create_new


def ensure_secret(path: Path, nbytes: int = 32) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_new(path, (secrets.token_hex(nbytes) + "\n").encode(), 0o600)
    return path.read_bytes().strip()
