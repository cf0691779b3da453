"""The session's check that the stack logged no unexpected error (tests/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.stackrun import unexpected_log_errors

LMTP_NOISE = (
    "Dec 02 21:07:08 lmtp(a1@ddmail.test)<15128><uL5u>: Error: lmtp-server: conn unix:pid=1 "
    "[3]: rcpt a1@ddmail.test: Mailbox INBOX: Saving mail: read() failed: read(/x) failed: "
    "Private key not available: mailbox_attribute_get(INBOX, /priv/x) failed: Mailbox "
    "attributes not enabled (read reason=)"
)
KEYHANDLER_DOWN = (
    "Dec 02 21:19:00 auth-worker(29438): Error: conn unix:auth-worker (pid=1,uid=104): "
    "auth-worker<52>: lua(u1@ddmail.test,[ip],<jEsU>): db-lua: keyhandler unlock failed: HTTP 9003"
)


def _logs(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.log").write_text(text + "\n")
    return tmp_path


def test_every_error_panic_and_fatal_line_is_reported(tmp_path: Path) -> None:
    logs = _logs(
        tmp_path,
        dovecot="\n".join(
            [
                LMTP_NOISE,
                "Dec 02 master: Panic: file mail-user.c: line 258: assertion failed",
                "Dec 02 master: Fatal: service(auth-worker) Group doesn't exist",
                "Dec 02 lmtp(1): Info: msgid=<a@b>: saved mail to INBOX",
            ]
        ),
        postfix="\n".join(
            [
                "Dec 02 mail postfix/smtpd[1]: fatal: open /etc/postfix/main.cf: No such file",
                "Dec 02 mail postfix/lmtp[2]: error: unsupported dictionary type: foo",
                "Dec 02 mail postfix/submissions/smtpd[3]: SSL_accept error from unknown[ip]: "
                "lost connection",
                "Dec 02 mail postfix/smtpd[1]: warning: hostname [host] does not resolve",
            ]
        ),
        keyhandler="ValueError: only a Python traceback line, not a daemon's severity",
    )
    found = unexpected_log_errors(logs, [])
    assert len(found) == 5, found
    assert found[0].startswith("dovecot.log: ") and "Private key not available" in found[0]
    assert not any("SSL_accept error" in line or "Info:" in line for line in found)


def test_expected_errors_excuse_only_what_they_name(tmp_path: Path) -> None:
    other = KEYHANDLER_DOWN.replace("u1@ddmail.test", "u2@ddmail.test")
    logs = _logs(tmp_path, dovecot="\n".join([KEYHANDLER_DOWN, other]))
    expected = [re.compile(r"lua\(u1@ddmail\.test,.*keyhandler unlock failed: HTTP 9\d\d\d$")]
    assert unexpected_log_errors(logs, expected) == [f"dovecot.log: {other}"]
