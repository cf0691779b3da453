"""Child processes of the stack, with their output redacted into the log directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ddmail_common.logredact import pump

# Daemons live in sbin, which a user's PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def find_tool(name: str) -> str:
    """The path of the program NAME (a Debian package's daemon)."""
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise RuntimeError(f"{name} not found: ./dev installs it")
    return found


def log_pipe(log_file: Path) -> tuple[int, threading.Thread]:
    """A pipe whose read end is pumped, redacted, into LOG_FILE; returns the write fd."""
    read_fd, write_fd = os.pipe()
    reader: IO[bytes] = os.fdopen(read_fd, "rb")
    thread = threading.Thread(target=pump, args=(reader, log_file), daemon=True)
    thread.start()
    return write_fd, thread


def spawn(
    argv: Sequence[str], log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    write_fd, _ = log_pipe(log_file)
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(write_fd)


def python_script(name: str) -> str:
    """A console script of this installation (next to the running interpreter)."""
    return str(Path(sys.executable).parent / name)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def unix_accepts(path: Path) -> bool:
    """True once a server listens on the unix socket PATH."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(str(path)) == 0


def wait_for(check_name: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{check_name} did not come up within {timeout:.0f} s")
