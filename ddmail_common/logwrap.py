"""`ddmail-logwrap -- PROGRAM ARGS...`: run a daemon that logs to stdout/stderr (Postfix
`postfix start-fg` with maillog_file=/dev/stdout, `dovecot -F` with log_path=/dev/stderr,
nginx with `daemon off;` and error_log stderr) with both streams in a pipe, and pass every line
through logredact to this process's stdout, so journald never receives a client address or a
HELO name (DN 33). Signals an init system sends (TERM, INT, HUP) go to the program; the exit
status is the program's (128+N if signal N ended it, as a shell reports it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import IO

from ddmail_common.logredact import redact

# A line longer than this is cut and redacted in pieces: a daemon cannot make us hold an
# unbounded line in memory.
MAX_LINE = 64 * 1024
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# After the program exits, a grandchild that inherited the pipe may still hold it open; its
# last lines get this long, then the wrapper exits with the program's status.
DRAIN_SECONDS = 5.0


def pump(src: IO[bytes], dst: IO[bytes]) -> None:
    while line := src.readline(MAX_LINE):
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        try:
            dst.write(redact(text).encode() + b"\n")
            dst.flush()
        except (BrokenPipeError, ValueError):
            return  # nobody reads our output any more; the program keeps running


def exit_status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: ddmail-logwrap -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        print(f"ddmail-logwrap: cannot run {args[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    assert proc.stdout is not None
    pumping = threading.Thread(target=pump, args=(proc.stdout, sys.stdout.buffer), daemon=True)
    pumping.start()
    returncode = proc.wait()  # signal handlers run while waiting; the wait then resumes
    pumping.join(DRAIN_SECONDS)
    return exit_status(returncode)


if __name__ == "__main__":
    sys.exit(main())
