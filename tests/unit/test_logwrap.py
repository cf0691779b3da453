"""ddmail-logwrap: a daemon's output reaches the journal redacted; signals reach the daemon;
its exit status is the wrapper's."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

LOGWRAP = [sys.executable, "-m", "ddmail_common.logwrap", "--"]

CHATTY = """
import sys
print("postfix/smtpd[1]: connect from pool-7.example.net[192.0.2.7]", flush=True)
print("dovecot: imap-login: Login: user=<a@b>, rip=2001:db8::17, lip=::1", file=sys.stderr)
print("postfix/smtpd[1]: NOQUEUE: reject: RCPT; helo=<alices-laptop.example>", flush=True)
sys.exit(3)
"""

WAITS = """
import signal, sys, time
def on(signum, _):
    print(f"got signal {signum} from 198.51.100.4", flush=True)
    if signum == signal.SIGTERM:
        sys.exit(7)
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, on)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


def test_lines_are_redacted_and_the_exit_status_passed_on() -> None:
    ran = subprocess.run([*LOGWRAP, sys.executable, "-c", CHATTY], capture_output=True, timeout=60)
    assert ran.returncode == 3
    out = ran.stdout.decode()
    assert "connect from [host][ip]" in out
    assert "rip=[ip], lip=[ip]" in out
    assert "helo=<[host]>" in out
    for leak in ("192.0.2.7", "2001:db8::17", "alices-laptop", "pool-7"):
        assert leak not in out
    assert ran.stderr == b""


def test_signals_are_forwarded_to_the_program() -> None:
    proc = subprocess.Popen(
        [*LOGWRAP, sys.executable, "-c", WAITS], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    for sig in (signal.SIGHUP, signal.SIGINT):
        proc.send_signal(sig)
        assert proc.stdout.readline() == f"got signal {int(sig)} from [ip]\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == f"got signal {int(signal.SIGTERM)} from [ip]\n"
    assert proc.wait(30) == 7


def test_a_program_killed_by_a_signal_reports_128_plus_it() -> None:
    ran = subprocess.run(
        [*LOGWRAP, sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)"],
        timeout=60,
    )
    assert ran.returncode == 128 + 9


def test_a_missing_program_is_status_127(tmp_path: Path) -> None:
    ran = subprocess.run([*LOGWRAP, str(tmp_path / "nope")], capture_output=True, timeout=60)
    assert ran.returncode == 127 and b"cannot run" in ran.stderr
