"""Start `ddmail stack up` as a subprocess for tests and talk to it like a user would."""

from __future__ import annotations

import imaplib
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from ddmail_common.client import ServiceClient
from ddmail_stack import filters
from ddmail_stack.layout import StackLayout
from ddmail_stack.processes import python_script, spawn
from tests.authdns import AuthDns

VENV_BIN = Path(sys.executable).parent
FILTER_STARTERS = {
    "rspamd": filters.start_rspamd,
    "clamd": filters.start_clamd,
    "redis": filters.start_redis,
}
TEST_ACCOUNT = "test-account"
TEST_RECOVERY = "test-recovery-secret-" + "r" * 24


def postgres_url() -> str | None:
    """A fresh PostgreSQL database when DDMAIL_TEST_DB=postgresql (see ./dev setup_postgres)."""
    if os.environ.get("DDMAIL_TEST_DB") != "postgresql":
        return None
    import psycopg

    name = "ddmail_t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(
        "host=127.0.0.1 user=ddmail_test password=ddmail_test dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://ddmail_test@127.0.0.1:5432/{name}?passfile={_passfile()}"


def _passfile() -> Path:
    """The test role's password in a libpq passfile: URLs (and so argv) never carry it."""
    path = Path(tempfile.gettempdir()) / f"ddmail-test-{os.getuid()}.pgpass"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("127.0.0.1:5432:*:ddmail_test:ddmail_test\n")
    return path


# What the tests' "remote servers" greet with: a host name, as real ones do (rspamd scores an
# address literal).
SENDER_HELO = "mx.sender.example"


@dataclass
class RunningStack:
    root: Path
    info: dict[str, Any]
    proc: subprocess.Popen[bytes]
    # The authoritative DNS server the stack resolves through (--dns), if it was given one.
    dns: AuthDns | None = None
    # Errors tests provoke on purpose; any other error-level log line fails the session.
    expected_log_errors: list[re.Pattern[str]] = field(default_factory=list)

    def expect_log_errors(self, *patterns: str) -> None:
        """Excuse error lines a fault test provokes on purpose. Make each pattern as narrow as
        the fault (name the test's own mailbox), so real errors still fail the session."""
        self.expected_log_errors += [re.compile(p) for p in patterns]

    @property
    def log_dir(self) -> Path:
        return Path(self.info["log_dir"])

    @property
    def mail_root(self) -> Path:
        return Path(self.info["mail_root"])

    def client(self, caller: str = "web") -> ServiceClient:
        secret = (self.root / "secrets" / f"{caller}.key").read_bytes().strip()
        return ServiceClient(caller, secret, Path(self.info["backend_socket"]), "backend")

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.info["tls_ca"])

    def new_mailbox(self, local: str | None = None) -> tuple[str, str]:
        address = f"{local or 'u' + uuid.uuid4().hex[:10]}@{self.info['global_domain']}"
        made = self.client().call(
            "POST", "/v1/mailboxes", {"account": TEST_ACCOUNT, "address": address}
        )
        return str(made["address"]), str(made["password"])

    def new_alias(self, *destinations: str, prefix: str = "me") -> str:
        """A new alias of the test account on the global domain that delivers to DESTINATIONS."""
        alias = f"{prefix}{uuid.uuid4().hex[:6]}@{self.info['global_domain']}"
        self.client().call(
            "POST",
            "/v1/aliases",
            {"account": TEST_ACCOUNT, "address": alias, "destinations": list(destinations)},
        )
        return alias

    def smtp(self, port_name: str = "smtp_port") -> smtplib.SMTP:
        return smtplib.SMTP(
            "127.0.0.1", self.info[port_name], timeout=30, local_hostname=SENDER_HELO
        )

    def smtps(self) -> smtplib.SMTP_SSL:
        return smtplib.SMTP_SSL(
            "127.0.0.1", self.info["smtps_port"], timeout=30, context=self.tls()
        )

    @contextmanager
    def submit(self, port: str, address: str, password: str) -> Iterator[smtplib.SMTP]:
        """A session logged in as ADDRESS over 587 (STARTTLS), 465 (implicit TLS) or "anon"
        (the loopback listener Tor and I2P forward to: no TLS)."""
        if port == "anon":
            with self.smtp("anon_submission_port") as s:
                s.login(address, password)
                yield s
        elif port == "587":
            with self.smtp("submission_port") as s:
                s.starttls(context=self.tls())
                s.login(address, password)
                yield s
        else:
            with self.smtps() as s:
                s.login(address, password)
                yield s

    def sink_files(self, marker: str) -> list[bytes]:
        """The messages that reached the stack's stand-in for the internet with MARKER in them."""
        return [
            data
            for p in Path(self.info["sink_dir"]).glob("*.eml")
            if marker.encode() in (data := p.read_bytes())
        ]

    def imap(self) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL(
            "127.0.0.1", self.info["imaps_port"], ssl_context=self.tls(), timeout=30
        )

    def imap_anon(self) -> imaplib.IMAP4:
        """IMAP as Tor and I2P forward it: the loopback listener, no TLS."""
        return imaplib.IMAP4("127.0.0.1", self.info["anon_imap_port"], timeout=30)

    def deliver(
        self, to: str, subject: str, body: str, sender: str = "someone@example.org"
    ) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, to, subject
        msg.set_content(body)
        with self.smtp() as s:
            s.send_message(msg)

    def postqueue(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["postqueue", "-c", str(self.root / "etc" / "postfix"), "-j"],
            capture_output=True,
            check=True,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def deferred(self, address: str) -> bool:
        """True once a message to ADDRESS sits in the deferred queue (its first attempt over:
        a flush now really retries it; one while it is active would do nothing)."""
        return any(
            q.get("queue_name") == "deferred" and address in str(q.get("recipients"))
            for q in self.postqueue()
        )

    def flush_queue(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.root / "etc" / "postfix"), "-f"], check=True)

    def postconf(self, name: str) -> str:
        """Postfix's value of parameter NAME in the stack's rendered configuration."""
        return subprocess.run(
            ["postconf", "-c", str(self.root / "etc" / "postfix"), "-h", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def service_pid(self, name: str) -> int:
        return int((self.root / "run" / f"{name}.pid").read_text())

    def stop_service(self, name: str, sock: Path) -> None:
        """Stop the stack's service NAME (a fault a test provokes); wait until SOCK is gone."""
        os.killpg(self.service_pid(name), signal.SIGTERM)
        wait_until(lambda: not sock.exists(), 20, f"{name} stopped")

    def stop_filter(self, name: str) -> None:
        """Stop the stack's rspamd, clamd or redis (a fault a test provokes)."""
        pid = self.service_pid(name)
        os.killpg(pid, signal.SIGTERM)
        wait_until(lambda: not _running(pid), 30, f"{name} stopped")

    def start_filter(self, name: str) -> None:
        """Start it again as the stack does (owned by this test process; stack down finds it
        by its pid file)."""
        proc = FILTER_STARTERS[name](StackLayout.load(self.root))
        (self.root / "run" / f"{name}.pid").write_text(f"{proc.pid}\n")

    def start_service(self, name: str, sock: Path) -> None:
        """Start ddmail-NAME again, as the stack does (now owned by this test process, which
        stack down still finds by its pid file); wait until it listens on SOCK."""
        proc = spawn(
            [python_script(f"ddmail-{name}"), "--config", str(self.root / "etc" / "ddmail.toml")],
            self.log_dir / f"{name}.log",
        )
        (self.root / "run" / f"{name}.pid").write_text(f"{proc.pid}\n")
        wait_until(sock.exists, 20, f"{name} started")


# A line a daemon or service logged at error level or worse: Dovecot's "Error:", "Panic:",
# "Fatal:" and Postfix's "error:", "fatal:", "panic:" (its severity comes first).
SEVERE_LOG_LINE = re.compile(r"(?:^|: )(?:Error|Panic|Fatal|error|fatal|panic): ")


def _running(pid: int) -> bool:
    """PID exists and is not a zombie (the stack process reaps its children only at exit)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def unexpected_log_errors(log_dir: Path, expected: list[re.Pattern[str]]) -> list[str]:
    """The error-level lines in LOG_DIR's files that match none of EXPECTED (the errors tests
    provoked on purpose, see RunningStack.expect_log_errors)."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if SEVERE_LOG_LINE.search(line) and not any(p.search(line) for p in expected):
                found.append(f"{path.name}: {line}")
    return found


def wait_until(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


OFFSETS = (25, 26, 80, 143, 180, 443, 465, 587, 588, 993)


def free_port_base() -> int:
    """A port base whose every stack port is free now (two stacks may run at once: the
    integration and end-to-end sessions, or a benchmark)."""
    for _ in range(50):
        base = random.randrange(21000, 40000, 1000)
        if all(_free(base + offset) for offset in OFFSETS):
            return base
    raise RuntimeError("no free port base found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_stack(dns: AuthDns | None = None, extra: tuple[str, ...] = ()) -> RunningStack:
    """A new stack; EXTRA: more `ddmail stack up` options."""
    root = Path(tempfile.mkdtemp(prefix="ddm-", dir="/tmp"))
    port_base = free_port_base()
    argv = [
        str(VENV_BIN / "ddmail"),
        "stack",
        "up",
        "--root",
        str(root),
        "--port-base",
        str(port_base),
    ]
    db_url = postgres_url()
    if db_url:
        argv += ["--db", db_url]
    if dns is not None:
        argv += ["--dns", dns.address]
    argv += extra
    out = (root / "stack-up.out").open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while not (root / "stack.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_stack_proc(proc)
            raise RuntimeError("stack did not start:\n" + (root / "stack-up.out").read_text())
        time.sleep(0.2)
    stack = RunningStack(root, json.loads((root / "stack.json").read_text()), proc, dns)
    try:
        _add_test_account(stack)
    except BaseException:
        stop_stack_proc(proc)  # never leave a running stack behind a failed fixture
        raise
    return stack


def _add_test_account(stack: RunningStack) -> None:
    client = stack.client()
    client.call(
        "POST", "/v1/accounts/recovery-key", {"account": TEST_ACCOUNT, "secret": TEST_RECOVERY}
    )
    # The panel's side of the same account; gratis, so billing runs leave it alone.
    engine = create_engine(stack.info["db_url"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO web_accounts (id, created_at, enabled, gratis, payment_reference)"
                " VALUES (:a, 0, TRUE, TRUE, 'TESTREF')"
            ),
            {"a": TEST_ACCOUNT},
        )
    engine.dispose()


def stop_stack_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextmanager
def own_stack(*extra: str) -> Iterator[RunningStack]:
    """A stack of one test's own (started with the `ddmail stack up` options EXTRA), for what
    the shared one must not see: a wipe and restart, another configuration."""
    running = start_stack(extra=extra)
    yield running
    subprocess.run(
        [str(VENV_BIN / "ddmail"), "stack", "down", "--root", str(running.root)],
        capture_output=True,
        timeout=300,
    )
    stop_stack_proc(running.proc)
    errors = unexpected_log_errors(running.log_dir, running.expected_log_errors)
    assert not errors, "unexpected errors in the stack's logs:\n" + "\n".join(errors[:20])
    shutil.rmtree(running.root, ignore_errors=True)
