"""Secret files of a local stack: created once, 0600, never printed."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def ensure_secret(path: Path, nbytes: int = 32) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(nbytes) + "\n")
    return path.read_bytes().strip()
