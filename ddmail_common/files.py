"""Creating a file that must not exist yet: keys and secrets are written once, never over
another file and never through a symlink, and are on disk when the call returns."""

from __future__ import annotations

import os
from pathlib import Path

CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_new(path: Path, data: bytes, mode: int) -> None:
    """Write DATA into a new file PATH with MODE (before the umask); FileExistsError if PATH
    exists (a symlink included)."""
    fd = os.open(path, CREATE_NEW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(fd)
