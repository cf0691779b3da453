"""A bounded pool of slots for CPU-heavy work (argon2id), shared by every panel worker process.

Each slot is a lock file held with flock(2): the kernel releases it when the holder closes it or
dies, so a killed worker can never leak a slot. Work for someone who has already proven a
factor (a login with the right key file, a logged-in user) waits for a slot; unauthenticated
work (registration) never goes before it: while a priority caller waits, it is shed at once.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL = 0.005  # seconds between tries while waiting for a slot


class Busy(Exception):
    """No slot became free in time: the request is shed, nothing was done."""


class WorkSlots:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a work pool needs at least one slot")
        # Made before gunicorn forks its workers, so all of them share the same files.
        self._dir = Path(tempfile.mkdtemp(prefix="ddmail-work-"))
        self._slots = [self._dir / f"slot{i}" for i in range(size)]
        self._waiting = self._dir / "priority-waiting"
        for path in (*self._slots, self._waiting):
            path.touch(mode=0o600)
        atexit.register(self._remove, os.getpid())

    def _remove(self, creator: int) -> None:
        if os.getpid() == creator:  # not when a forked worker exits
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def size(self) -> int:
        return len(self._slots)

    def _try_take(self) -> int | None:
        for path in self._slots:
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    def _priority_waiting(self) -> bool:
        fd = os.open(self._waiting, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases the probe's lock
        return False

    @contextmanager
    def slot(self, wait: float, priority: bool) -> Iterator[None]:
        """Hold one slot for the block, waiting up to WAIT seconds for it; a caller without
        PRIORITY gives up as soon as a priority caller is waiting. Raises Busy if none came."""
        fd: int | None = None
        deadline = time.monotonic() + wait
        if priority:
            # A shared lock on the marker tells others that a priority caller is waiting.
            marker = os.open(self._waiting, os.O_RDONLY)
            try:
                fcntl.flock(marker, fcntl.LOCK_SH)
                while (fd := self._try_take()) is None and time.monotonic() < deadline:
                    time.sleep(POLL)
            finally:
                os.close(marker)
        else:
            while not self._priority_waiting() and (fd := self._try_take()) is None:
                if time.monotonic() >= deadline:
                    break
                time.sleep(POLL)
        if fd is None:
            raise Busy()
        try:
            yield
        finally:
            os.close(fd)
