"""What happens when the keyhandler is down or a key is missing, and what never leaks."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import smtplib
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.integration.test_mail_flow import fetch_all, inbox_has, stored_files
from tests.stackrun import TEST_ACCOUNT, RunningStack, wait_until

# A message text only the filters ever see in clear (rspamd and clamd scan before encryption).
FILTER_TEXT_MARKER = b"filtered-text-" + uuid.uuid4().hex.encode()
IP_PATTERN = re.compile(rb"\b(?:\d{1,3}\.){3}\d{1,3}\b|\[[0-9a-fA-F:]*:[0-9a-fA-F:]+\]")


def addresses(data: bytes) -> list[bytes]:
    """Every IPv4 or bracketed IPv6 address in DATA (a "[pid:thread]" log prefix is none)."""
    found = []
    for candidate in IP_PATTERN.findall(data):
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(candidate.strip(b"[]").decode())
            found.append(candidate)
    return found


def _kill_keyhandler(stack: RunningStack) -> None:
    pid = stack.service_pid("keyhandler")
    os.killpg(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), what="keyhandler stop")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


@pytest.fixture
def keyhandler_down(stack: RunningStack) -> Iterator[None]:
    _kill_keyhandler(stack)
    yield
    # Bring a keyhandler back for the rest of the session (owned by this test process).
    sock = Path(stack.info["keyhandler_socket"])
    stack.start_service("keyhandler", sock)
    wait_until(lambda: _accepts(sock), what="keyhandler restart")


def _accepts(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        return s.connect_ex(str(path)) == 0


def test_keyhandler_down_imap_tempfails_smtp_auth_fails_delivery_works(
    stack: RunningStack, request: pytest.FixtureRequest
) -> None:
    address, password = stack.new_mailbox()
    # Dovecot reports the failed unlocks of this mailbox (connection refused: HTTP 9003).
    stack.expect_log_errors(
        rf"auth-worker\(\d+\): Error: .*lua\({re.escape(address)},.*: "
        r"(db-lua: keyhandler unlock failed: HTTP 9\d\d\d|passdb-lua: keyhandler unavailable)$"
    )
    request.getfixturevalue("keyhandler_down")
    with stack.imap() as imap, pytest.raises(Exception, match="UNAVAILABLE"):
        imap.login(address, password)
    with stack.smtps() as s, pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(address, password)
    marker = uuid.uuid4().hex
    stack.deliver(address, "while the keyhandler is down", marker)
    wait_until(lambda: stored_files(stack, address), what="delivery without the keyhandler")


def test_keyhandler_down_while_creating_leaves_nothing(
    stack: RunningStack, keyhandler_down: None
) -> None:
    address = f"half{uuid.uuid4().hex[:8]}@{stack.info['global_domain']}"
    with pytest.raises(Exception) as exc:
        stack.client().call("POST", "/v1/mailboxes", {"account": TEST_ACCOUNT, "address": address})
    assert getattr(exc.value, "status", None) == 503
    engine = create_engine(stack.info["db_url"])
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM mail_mailboxes WHERE address = :a"), {"a": address}
            ).scalar()
            == 0
        )
        assert (
            conn.execute(
                text("SELECT count(*) FROM backend_mailboxes WHERE address = :a"), {"a": address}
            ).scalar()
            == 0
        )
        assert (
            conn.execute(
                text("SELECT count(*) FROM keyhandler_mailbox_keys WHERE address = :a"),
                {"a": address},
            ).scalar()
            == 0
        )
    engine.dispose()
    local, _, domain = address.partition("@")
    assert not (stack.mail_root / domain / local).exists()
    with stack.smtp() as s, pytest.raises(smtplib.SMTPRecipientsRefused):
        s.sendmail("someone@example.org", [address], b"Subject: x\r\n\r\nx\r\n")


def test_mail_to_a_mailbox_without_key_is_deferred_then_delivered(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    engine = create_engine(stack.info["db_url"])
    with engine.begin() as conn:
        key = conn.execute(
            text("SELECT public_key FROM backend_mailboxes WHERE address = :a"), {"a": address}
        ).scalar()
        conn.execute(
            text("UPDATE backend_mailboxes SET public_key = NULL WHERE address = :a"),
            {"a": address},
        )
    # LMTP refuses the key-less mailbox (the userdb's sentinel key does not parse): 451.
    stack.expect_log_errors(
        rf"lmtp\(\d+\): Error: .*rcpt {re.escape(address)}: Failed to initialize user: "
        r"mail_crypt_plugin: mail_crypt_global_public_key: Couldn't parse public key"
    )
    marker = uuid.uuid4().hex
    stack.deliver(address, "no key yet", marker)
    wait_until(lambda: stack.deferred(address), 60, what="message deferred in the queue")
    assert not stored_files(stack, address)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE backend_mailboxes SET public_key = :k WHERE address = :a"),
            {"k": key, "a": address},
        )
    engine.dispose()
    stack.flush_queue()
    wait_until(
        lambda: inbox_has(stack, address, password, marker),
        timeout=60,
        what="delivery after the key exists",
    )
    assert all(f.startswith(b"CRYPTED") for f in stored_files(stack, address))


class ArgvWatcher(threading.Thread):
    """Samples every process's argv and environment while operations run."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[bytes] = set()
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                for name in ("cmdline", "environ"):
                    with contextlib.suppress(OSError):
                        self.seen.add((proc / name).read_bytes())

    def stop(self) -> bytes:
        self.stop_event.set()
        self.join()
        return b"\n".join(self.seen)


def test_no_marker_on_disk_after_hundreds_of_messages(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    markers = [f"mk{uuid.uuid4().hex}" for _ in range(4)]
    count = 240
    with stack.smtp() as s:
        for i in range(count):
            m = markers[i % len(markers)]
            s.sendmail(
                "someone@example.org",
                [address],
                f"From: a@example.org\r\nTo: {address}\r\nSubject: subj-{m}\r\n\r\n"
                f"body-{m}\r\n".encode(),
            )
    wait_until(
        lambda: len(stored_files(stack, address)) >= count, timeout=120, what="all messages stored"
    )
    assert len(fetch_all(stack, address, password)) == count  # fetched: IMAP caches tempted
    needles = [m.encode() for m in markers]
    for path in stack.root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.suffix not in (".eml", ".sock"):
            if path.name.startswith("stack-up"):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits = [n for n in needles if n in data]
            assert not hits, f"plaintext marker found in {path}"


def test_no_secret_or_ip_in_logs_argv_or_database(stack: RunningStack) -> None:
    watcher = ArgvWatcher()
    watcher.start()
    secrets: list[str] = []
    for _ in range(3):
        address, password = stack.new_mailbox()
        secrets.append(password)
        new = stack.client().call(
            "POST",
            "/v1/mailboxes/password",
            {"account": TEST_ACCOUNT, "address": address, "current_password": password},
        )["password"]
        secrets.append(str(new))
        with stack.imap() as imap:
            imap.login(address, str(new))
        with stack.smtps() as s:
            s.login(address, str(new))
    # A client that names itself after its address: Postfix logs the HELO name in reject lines.
    helo = "pool-71-105-12-34.example.net"
    with stack.smtp() as s:
        s.ehlo(helo)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@example.org", [f"nobody-{uuid.uuid4().hex[:8]}@ddmail.test"], b"x")
        # ... and one whose Message-ID and envelope sender spell an address in a name.
        s.sendmail(
            "x@h-198-51-100-88.dyn.example",
            [address],
            b"Message-ID: <m1@pool-71-105-12-34.example.net>\r\nSubject: hi\r\n\r\n"
            + FILTER_TEXT_MARKER
            + b"\r\n",
        )
    wait_until(
        lambda: b"message-id=<m1@[host]>" in (stack.log_dir / "postfix.log").read_bytes(),
        what="the message-id logged without the name",
    )
    argv_and_env = watcher.stop()
    engine = create_engine(stack.info["db_url"])
    with engine.connect() as conn:
        keys = [str(r[0]) for r in conn.execute(text("SELECT public_key FROM mail_mailboxes"))]
        tables = (
            "backend_mailboxes",
            "keyhandler_mailbox_keys",
            "backend_idempotency",
            "keyhandler_idempotency",
            "backend_jobs",
        )
        queries = [text("SELECT * FROM " + t) for t in tables]
        dump = repr([list(conn.execute(q)) for q in queries])
    engine.dispose()
    logs = b"\n".join(p.read_bytes() for p in stack.log_dir.rglob("*") if p.is_file())
    assert logs, "the stack wrote no logs at all"
    for secret in secrets:
        assert secret.encode() not in logs
        assert secret.encode() not in argv_and_env
        assert secret.encode().hex().encode() not in logs
        assert secret not in dump
    assert b"PRIVATE KEY" not in logs
    assert not addresses(logs), addresses(logs)[:5]
    assert FILTER_TEXT_MARKER not in logs
    # What rspamd, Redis and clamd keep (Bayes tokens, caches, snapshots, signatures): no
    # address, no host name spelling one, no message text.
    redis = stack.root / "run" / "redis" / "redis.sock"
    subprocess.run(["redis-cli", "-s", str(redis), "SAVE"], check=True, capture_output=True)
    stores = b"\n".join(
        p.read_bytes() for p in (stack.root / "lib" / "filters").rglob("*") if p.is_file()
    )
    assert b"REDIS" in stores  # the snapshot was written and is part of what is checked
    assert not addresses(stores), addresses(stores)[:5]
    assert b"pool-71-105-12-34" not in stores and b"198-51-100-88" not in stores
    assert FILTER_TEXT_MARKER not in stores
    # No client host name (reverse DNS of 127.0.0.1 is "localhost") and no HELO name.
    assert b"pool-71-105-12-34" not in logs and b"198-51-100-88" not in logs
    assert b"localhost[" not in logs
    assert b"helo=<[host]>" in logs  # the reject line was logged, without the name
    assert keys  # public keys are public; private halves only ever appear wrapped
    db_file = stack.info["db_url"].removeprefix("sqlite:///")
    if Path(db_file).exists():
        raw = (
            Path(db_file).read_bytes() + Path(db_file + "-wal").read_bytes()
            if Path(db_file + "-wal").exists()
            else Path(db_file).read_bytes()
        )
        for secret in secrets:
            assert secret.encode() not in raw
        assert b"PRIVATE KEY" not in raw
