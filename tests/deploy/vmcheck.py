"""The checks run INSIDE the booted deployment VM by `ddmail-ci.service`, with the system's
/usr/bin/python3 (standard library only: the deployment's virtualenv is what is under test).

Usage: vmcheck.py CONFIG.json RESULT.json. Every check appends {name, ok, detail} to RESULT,
which is rewritten after each check, so a run that hangs or crashes still reports how far it
got. The host's test (tests/deploy/test_vm.py) reads RESULT back from the powered-off image.

Order: the boot settles; units and their state; the smoke test over the VM's own loopback
(register, fund, log in, add a mailbox, deliver on 25, read over IMAPS, submit on 587 to a
sink, the stored file is ciphertext); AppArmor confinement of the live processes; no AppArmor
denial so far; negative probes (marked by their PIDs); backup, wipe, restore, read again."""

from __future__ import annotations

import contextlib
import errno
import grp
import http.client
import imaplib
import json
import os
import pwd
import re
import shutil
import smtplib
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import tomllib
import traceback
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # /ci/tests/ ships next to us

from tests.httpsbrowser import HttpsBrowser
from tests.panelforms import Registered, codes
from tests.tlsrpt_sample import EXAMPLE_ADDRESSES, example_report, report_mail
from tests.vmcheck_anonymity import ANONYMITY_UNITS, Anonymity
from tests.vmcheck_resolver import RESOLVER_UNITS, Resolver

VENV_BIN = Path("/opt/ddmail/venv/bin")
DDMAIL_UNITS = (
    "ddmail-web.service",
    "ddmail-backend.service",
    "ddmail-keyhandler.service",
    "ddmail-pgpstage.service",
    "ddmail-milter.service",
    "ddmail-tlsrpt.service",
    "ddmail-periodic.timer",
    "ddmail-backup.timer",
    "ddmail-zone-sign.timer",
)
# What docs/operations.md "Restoring" stops first and starts again afterwards.
RESTORE_STOPS = (
    # Their keys are wiped and restored too (roles tor and i2pd): started again on them.
    "tor@default.service",
    "i2pd.service",
    "ddmail-backup.timer",
    "ddmail-periodic.timer",
    "postfix.service",
    "dovecot.service",
    "nginx.service",
    "ddmail-web.service",
    "ddmail-backend.service",
    "ddmail-keyhandler.service",
    "ddmail-pgpstage.service",
    "ddmail-milter.service",
    "ddmail-tlsrpt.service",
    "ddmail-zone-sign.timer",
)
CONFIG = "/etc/ddmail/ddmail.toml"
AS_POSTGRES = ("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--")
DAEMON_UNITS = ("postfix.service", "dovecot.service", "nginx.service")
# The content filters (roles redis, clamav, rspamd). clamd is socket-activated and also
# started at boot (WantedBy=multi-user.target) once a signature database is in place.
FILTER_UNITS = ("redis-server.service", "clamav-daemon.service", "rspamd.service")
RSPAMD_MILTER = "/run/rspamd/milter.sock"
CLAMD_SOCKET = "/run/clamav/clamd.ctl"
REDIS_SOCKET = "/run/redis/redis-server.sock"
# The filter checks' SMTP client connects from this loopback address (lo has 127.0.0.0/8), so
# a log line naming the client is found by one grep and not confused with the resolver's.
FILTER_CLIENT = "127.0.0.77"
# rspamd's GTUBE strings (as tests/integration/test_mail_filtering.py): the standard one means
# "reject"; the test variant (rspamd_test_patterns in the test inventory) "add header": Junk.
GTUBE_REJECT = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_JUNK = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# The two signatures of the database the host put in place (ddmail_stack/filters.py's).
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
OWN_SIGNATURE = ("DDMail.Test.Custom", b"DDMAIL-LOCAL-MALWARE-TEST-SIGNATURE-7f3a9c")
# AppArmor labels of the DDMail processes (attached by the units' AppArmorProfile=).
DDMAIL_PROFILES = (
    "ddmail-web",
    "ddmail-backend",
    "ddmail-keyhandler",
    "ddmail-pgpstage",
    "ddmail-milter",
    "ddmail-tlsrpt",
)
# Executables of the confined daemons (path-attached profiles, Debian's or ours).
CONFINED_EXES = (
    "/usr/sbin/nginx",
    "/usr/lib/postfix/sbin/smtpd",
    "/usr/lib/dovecot/auth",
    "/usr/lib/dovecot/imap-login",
    "/usr/sbin/clamd",  # Debian's profile (package clamav-daemon), enforce mode
    "/usr/bin/rspamd",
    "/usr/bin/redis-check-rdb",  # what /usr/bin/redis-server links to
)
SINK_ADDR = ("127.0.0.2", 2525)
SINK_DOMAIN = "sink.test"
# Connections to these documentation addresses must fail; only the errno tells who refused.
OUTSIDE = "192.0.2.1"
OUTSIDE6 = "2001:db8::1"
DENIED = 'apparmor="DENIED"'


class Report:
    """The result file, rewritten after every check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"checks": [], "finished": False, "started": time.time()}
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)
        os.sync()

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.data["seconds"] = round(time.time() - self.data["started"], 1)
        check = {"name": name, "ok": ok, "detail": detail[-6000:], "t": self.data["seconds"]}
        self.data["checks"].append(check)
        self.write()
        print(f"[vmcheck] {'PASS' if ok else 'FAIL'} {name}: {detail[:300]}", flush=True)
        return ok

    def check(self, name: str, fn: Callable[[], str]) -> bool:
        """Run FN; it returns a detail string or raises (AssertionError = a failed check)."""
        try:
            return self.add(name, True, fn())
        except Exception as exc:  # every failure is reported, none stops the report
            return self.add(name, False, f"{exc!r}\n{traceback.format_exc()}")


def run(*argv: str, check: bool = True, timeout: int = 300, **kw: Any) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return str(done.stdout)


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 120, every: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # keep trying until the deadline, report the last error
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


# --- boot and units ---------------------------------------------------------------------


def boot_settled() -> str:
    """Every boot job done but ours (`is-system-running --wait` would wait for us too)."""

    def only_us() -> bool:
        jobs = run("systemctl", "list-jobs", "--no-legend", "--plain", check=False)
        return all("ddmail-ci.service" in line for line in jobs.splitlines() if line.strip())

    wait_until("the boot jobs", only_us, timeout=240)
    return run("systemctl", "is-system-running", check=False).strip()


def no_failed_unit() -> str:
    failed = run("systemctl", "--failed", "--plain", "--no-legend", check=False).strip()
    if failed:
        names = [line.split()[0] for line in failed.splitlines()]
        status = run("systemctl", "status", "--no-pager", "-n", "30", *names, check=False)
        raise AssertionError(f"failed units:\n{failed}\n{status}")
    return "none"


def units_active() -> str:
    """Active, and never restarted: a unit in a crash loop is "active" between its deaths."""
    states = {}
    for unit in (*DDMAIL_UNITS, *DAEMON_UNITS, *FILTER_UNITS, *RESOLVER_UNITS, *ANONYMITY_UNITS):
        show = run("systemctl", "show", "-p", "ActiveState", "-p", "NRestarts", unit)
        props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
        states[unit] = f"{props.get('ActiveState')} restarts={props.get('NRestarts', '0')}"
    bad = {u: s for u, s in states.items() if s != "active restarts=0"}
    assert not bad, f"not active or restarted: {bad}"
    return json.dumps(states)


# --- the smoke test ---------------------------------------------------------------------


class Sink(socketserver.ThreadingTCPServer):
    """The 'outside' mail server: a minimal SMTP receiver keeping what it is given."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        super().__init__(SINK_ADDR, SinkHandler)


class SinkHandler(socketserver.StreamRequestHandler):
    server: Sink

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply(f"220 {SINK_DOMAIN} ESMTP sink")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply(f"250 {SINK_DOMAIN}")
            elif verb == b"DATA":
                self.reply("354 go on")
                body = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    body += chunk
                self.server.messages.append(body)
                self.reply("250 2.0.0 kept")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                self.reply("250 ok")


class Smoke:
    """One account's way through the deployment, as a person and a remote server see it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.domain: str = cfg["global_domain"]
        self.mail_host: str = cfg["mail_host"]
        # Verifies host names and trusts only the deployment's own CA (loaded by hosts()).
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.browser = HttpsBrowser(f"https://{cfg['panel_host']}", self.tls)
        self.reg: Registered | None = None
        self.address = ""
        self.password = ""
        self.marker = uuid.uuid4().hex
        self.sink: Sink | None = None

    def hosts(self) -> str:
        """The VM has no DNS: its names point at its own loopback, as a test host's would.
        The clients trust the CA the deployment made (tls mode selfsigned)."""
        self.tls.load_verify_locations(cafile=self.cfg["ca_file"])
        names = {self.cfg["panel_host"], self.mail_host, f"mta-sts.{self.domain}"}
        line = "127.0.0.1 " + " ".join(sorted(names)) + "  # ddmail-ci\n"
        with open("/etc/hosts", "a") as hosts:
            hosts.write(line)
        return line.strip()

    def sink_transport(self) -> str:
        """Mail for sink.test goes to our sink: a transport entry the operator could add too."""
        self.sink = Sink()
        threading.Thread(target=self.sink.serve_forever, daemon=True).start()
        table = Path("/etc/postfix/ci-transport")
        table.write_text(f"{SINK_DOMAIN} smtp:[{SINK_ADDR[0]}]:{SINK_ADDR[1]}\n")
        existing = run("postconf", "-h", "transport_maps").strip()
        maps = f"texthash:{table}" + (f", {existing}" if existing else "")
        run("postconf", "-e", f"transport_maps = {maps}")
        run("postfix", "reload")
        return maps

    def register(self) -> str:
        # gunicorn's workers import the panel after the unit is "active": slow under emulation.
        def ready() -> bool:
            answer = self.browser.get("/register")
            assert answer.status == 200, (answer.status, answer.text[-800:])
            return True

        wait_until("the panel", ready, 180)
        self.reg = self.browser.register()
        return f"account {self.reg.account}, key file {len(self.reg.keyfile)} bytes"

    def fund(self) -> str:
        """New accounts start unfunded on a production host; the operator makes this one
        gratis and enables it, as documented."""
        assert self.reg is not None
        out = ""
        for action in ("gratis", "enable"):
            out += admin("account", action, self.reg.account)
        return out.strip()

    def login(self) -> str:
        assert self.reg is not None
        answer = self.browser.login(self.reg)
        assert answer.status == 302, (answer.status, answer.text[-2000:])
        return answer.headers.get("Location", "")

    def add_mailbox(self) -> str:
        local = "ci" + self.marker[:8]
        made = self.browser.post(
            "/settings/mailboxes", {"local_part": local, "domain": self.domain}
        )
        found = codes(made.text)
        assert "mailbox-password" in found, (made.status, made.text[-3000:])
        self.address, self.password = f"{local}@{self.domain}", found["mailbox-password"]
        return self.address

    def deliver(self) -> str:
        msg = EmailMessage()
        msg["From"], msg["To"] = "someone@example.org", self.address
        msg["Subject"] = f"subject {self.marker}"
        msg.set_content(f"body {self.marker}")
        with smtplib.SMTP(self.mail_host, 25, timeout=60) as smtp:
            smtp.ehlo("client.example.org")
            smtp.send_message(msg)
        return "accepted on 25"

    def tls_report(self) -> str:
        """RFC 8460's example report, gzip'd, mailed to tlsrpt@ on 25: Postfix's copy reaches
        ddmail-tlsrpt (its unit, user and AppArmor profile) and the backend stores it without
        the addresses it carried (DN 41)."""
        report_id = f"vm-{self.marker}"
        to = f"tlsrpt@{self.domain}"
        with smtplib.SMTP(self.mail_host, 25, timeout=60) as smtp:
            smtp.ehlo("client.example.org")
            smtp.sendmail(
                "someone@example.org", [to], report_mail(example_report(self.domain, report_id), to)
            )

        def listed() -> str | None:
            lines = admin("tls-reports").splitlines()
            return next((line for line in lines if f"\t{report_id}\t" in line), None)

        line: str = wait_until("the report in `ddmail admin tls-reports`", listed, timeout=120)
        assert not [a for a in EXAMPLE_ADDRESSES if a in line], line
        return line

    @contextlib.contextmanager
    def imap(self) -> Iterator[imaplib.IMAP4_SSL]:
        """An IMAPS session, logged out at the end (imaplib's close() is the IMAP CLOSE
        command, illegal outside a selected mailbox: not a way to end a session)."""
        session = imaplib.IMAP4_SSL(self.mail_host, 993, ssl_context=self.tls, timeout=60)
        try:
            yield session
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                session.logout()

    def inbox(self, folder: str = "INBOX") -> list[bytes]:
        with self.imap() as imap:
            imap.login(self.address, self.password)
            status, _ = imap.select(folder)
            if status != "OK":  # Junk does not exist before the first spam was filed
                return []
            _, data = imap.search(None, "ALL")
            messages = []
            for num in data[0].split():
                _, parts = imap.fetch(num, "(RFC822)")
                messages.append(bytes(parts[0][1]))  # type: ignore[index]
            return messages

    def read_back(self) -> str:
        wanted = f"body {self.marker}".encode()
        found = wait_until("the mail over IMAPS", lambda: [m for m in self.inbox() if wanted in m])
        return f"{len(found)} message(s) with the marker"

    def stored_files(self) -> list[Path]:
        local, _, domain = self.address.partition("@")
        maildir = Path(self.cfg["mail_root"]) / domain / local / "Maildir"
        return [p for sub in ("new", "cur") for p in (maildir / sub).glob("*") if p.is_file()]

    def stored_encrypted(self) -> str:
        files = self.stored_files()
        assert files, "no stored message file"
        for path in files:
            data = path.read_bytes()
            assert data.startswith(b"CRYPTED"), f"{path} is not mail_crypt ciphertext"
            assert self.marker.encode() not in data, f"{path} holds the plaintext marker"
        return f"{len(files)} file(s), all CRYPTED, no plaintext"

    def submit(self) -> str:
        assert self.sink is not None
        msg = EmailMessage()
        msg["From"], msg["To"] = self.address, f"friend@{SINK_DOMAIN}"
        msg["Subject"] = f"out {self.marker}"
        msg.set_content(f"outgoing {self.marker}")
        with smtplib.SMTP(self.mail_host, 587, timeout=60) as smtp:
            smtp.ehlo("laptop.example.org")
            smtp.starttls(context=self.tls)
            smtp.login(self.address, self.password)
            smtp.send_message(msg)
        sink = self.sink
        wanted = f"outgoing {self.marker}".encode()
        wait_until("the sink", lambda: any(wanted in m for m in sink.messages), timeout=120)
        return "relayed to the sink"

    def mta_sts_policy(self) -> str:
        """Senders fetch the global domain's policy from https://mta-sts.<domain>/ (RFC 8461):
        the certificate must name that host and the policy list this host's MX."""
        conn = http.client.HTTPSConnection(f"mta-sts.{self.domain}", 443, context=self.tls)
        try:
            conn.request("GET", "/.well-known/mta-sts.txt")
            answer = conn.getresponse()
            policy = answer.read().decode()
        finally:
            conn.close()
        assert answer.status == 200, (answer.status, policy[-500:])
        lines = policy.splitlines()
        assert "version: STSv1" in lines and f"mx: {self.mail_host}" in lines, policy
        return " / ".join(lines)

    def new_global_domain(self) -> str:
        """A domain the operator adds receives mail at once: the backend (unprivileged) asks
        root for a Postfix reload through ddmail-postfix-reload.path."""
        domain = f"d{self.marker[:6]}.{self.domain}"
        admin("domain", "add", domain)
        local = "nd" + self.marker[:6]
        made = self.browser.post("/settings/mailboxes", {"local_part": local, "domain": domain})
        assert "mailbox-password" in codes(made.text), (made.status, made.text[-2000:])
        address = f"{local}@{domain}"

        def accepted() -> bool:
            with smtplib.SMTP(self.mail_host, 25, timeout=60) as smtp:
                smtp.ehlo("client.example.org")
                smtp.sendmail("someone@example.org", [address], b"Subject: hi\r\n\r\nhi\r\n")
            return True

        # Well inside Postfix's own process recycling (max_idle 100 s): only a reload helps.
        wait_until(f"port 25 accepting {address}", accepted, timeout=60, every=3)
        return f"{domain} added; {address} accepted on 25"

    def remove_mailbox(self) -> str:
        """Removal with the key file: the keys go first, then the backend (group vmail) erases
        the maildir Dovecot made."""
        assert self.reg is not None
        local, _, domain = self.address.partition("@")
        home = Path(self.cfg["mail_root"]) / domain / local
        assert home.exists(), f"{home} missing before the removal"
        answer = self.browser.post(
            "/settings/mailboxes/remove",
            {"mailbox": self.address, "confirm": "y", "key": (self.reg.keyfile, "my.key")},
            token_from="/settings/mailboxes",
        )
        assert answer.status in (200, 302), (answer.status, answer.text[-2000:])
        wait_until(f"{home} erased", lambda: not home.exists(), timeout=120, every=3)
        return f"{self.address} removed; {home} erased"

    @contextlib.contextmanager
    def daemons_busy(self) -> Iterator[None]:
        """Hold sessions open so the on-demand processes exist while AppArmor is inspected:
        smtpd (a connection on 25), imap-login (an unauthenticated IMAPS session) and auth (a
        logged-in one just made)."""
        with contextlib.ExitStack() as stack:
            smtp = stack.enter_context(smtplib.SMTP(self.mail_host, 25, timeout=60))
            smtp.ehlo("client.example.org")
            logged_in = stack.enter_context(self.imap())
            logged_in.login(self.address, self.password)
            stack.enter_context(self.imap())
            yield


def unix_accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
    return True


def unix_ask(path: str, request: bytes, user: str = "") -> str:
    """One request and its answer on a unix socket, as USER (root if empty) with USER's
    groups, in a child process: the socket's mode and group decide, as for a real client."""
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(30)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno); sys.exit(0)\n"
        "s.sendall(sys.argv[2].encode()); print(s.recv(200).decode(errors='replace'))\n"
    )
    who = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] if user else []
    return run(*who, "/usr/bin/python3", "-c", script, path, request.decode()).strip()


class Filters:
    """rspamd, clamd and Redis in the deployed mail path, as a sending server and the user see
    them: spam and malware refused at DATA (5xx, nothing stored), spam below the reject score
    filed into Junk; the sockets only for their groups, Redis on no TCP port, and no client
    address in any filter's log."""

    def __init__(self, smoke: Smoke) -> None:
        self.smoke = smoke
        self.marker = uuid.uuid4().hex

    def ready(self) -> str:
        """rspamd compiles its rules at start (minutes under emulation): until its milter
        socket accepts, Postfix answers 4xx (milter_default_action = tempfail)."""
        wait_until("rspamd's milter socket", lambda: unix_accepts(RSPAMD_MILTER), 400, 3)

        def pong() -> str:
            answer = unix_ask(CLAMD_SOCKET, b"nPING\n")
            return answer if "PONG" in answer else ""

        return f"{RSPAMD_MILTER} accepts; clamd answers {wait_until('clamd', pong, 120)!r}"

    def message(self, subject: str, body: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"] = "someone@example.org", self.smoke.address
        msg["Subject"] = f"{subject} {self.marker}"
        msg.set_content(body)
        return msg

    def send(self, msg: EmailMessage) -> None:
        smoke = self.smoke
        with smtplib.SMTP(
            smoke.mail_host, 25, timeout=120, source_address=(FILTER_CLIENT, 0)
        ) as smtp:
            smtp.ehlo("client.example.org")
            smtp.send_message(msg)

    def stored(self) -> list[Path]:
        """Every message file of the mailbox, in any folder (INBOX, Junk)."""
        local, _, domain = self.smoke.address.partition("@")
        maildir = Path(self.smoke.cfg["mail_root"]) / domain / local / "Maildir"
        return [p for p in maildir.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")]

    def refused(self, msg: EmailMessage, wanted: str) -> str:
        """A 5xx at DATA (the sender's server bounces it, not us), nothing stored."""
        before = set(self.stored())
        try:
            self.send(msg)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error.decode(errors="replace")
        else:
            raise AssertionError("accepted")
        assert 500 <= code < 600 and wanted in text, (code, text)
        time.sleep(2)  # a message let through would be in the maildir by now (local delivery)
        assert set(self.stored()) == before, "a refused message was stored"
        return f"{code} {text}"

    def gtube_refused(self) -> str:
        return self.refused(self.message("gtube", f"{GTUBE_REJECT}\n"), "5.7.1")

    def malware_refused(self, payload: bytes, name: str) -> str:
        msg = self.message("invoice", "see the attachment")
        msg.add_attachment(
            payload, maintype="application", subtype="octet-stream", filename="a.com"
        )
        return self.refused(msg, f"Malware found in this message: {name}")

    def junk_filed(self) -> str:
        self.send(self.message("offer", f"{GTUBE_JUNK}\njunk {self.marker}\n"))
        wanted = f"junk {self.marker}".encode()
        found = wait_until(
            "the message in Junk", lambda: [m for m in self.smoke.inbox("Junk") if wanted in m]
        )
        assert not [m for m in self.smoke.inbox() if wanted in m], "also in INBOX"
        assert b"\nX-Spam: Yes" in found[0].replace(b"\r\n", b"\n"), found[0][:2000]
        return f"{len(found)} message(s) in Junk with X-Spam: Yes, none in INBOX"

    def sockets(self) -> str:
        """clamd's socket: 0660, group clamav (role clamav's drop-in; Debian's is 0666), Redis's
        0770, group redis: rspamd (in both groups) gets an answer, www-data (in neither) is
        refused there and on rspamd's milter socket (group _rspamd)."""
        found = []
        for path, group, wanted in (
            (CLAMD_SOCKET, "clamav", 0o660),
            (REDIS_SOCKET, "redis", 0o770),
        ):
            st = os.stat(path)
            mode = st.st_mode & 0o777
            gname = run("getent", "group", str(st.st_gid)).split(":")[0]
            assert (gname, mode) == (group, wanted), f"{path}: {oct(mode)} group {gname}"
            found.append(f"{path} {oct(mode)} group {gname}")
        assert "PONG" in unix_ask(CLAMD_SOCKET, b"nPING\n", "_rspamd")
        assert "PONG" in unix_ask(REDIS_SOCKET, b"PING\r\n", "_rspamd")
        for path in (CLAMD_SOCKET, REDIS_SOCKET, RSPAMD_MILTER):
            answer = unix_ask(path, b"nPING\n", "www-data")
            assert answer == f"refused {errno.EACCES}", f"www-data on {path}: {answer}"
        return "; ".join(found) + "; _rspamd answered, www-data refused on all three"

    def redis_no_tcp(self) -> str:
        """No TCP listener of Redis's at all (port 0): its sockets against the kernel's tables."""
        pid = run("systemctl", "show", "-P", "MainPID", "redis-server.service").strip()
        assert pid not in ("", "0"), "redis-server not running"
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        listening = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    listening.append(f"{table} {fields[1]}")
        assert inodes, "no socket of redis-server seen"
        assert not listening, f"redis-server listens on TCP: {listening}"
        return f"{len(inodes)} socket(s) of pid {pid}, none a TCP listener"

    def no_client_address_logged(self, after: str) -> str:
        """The client's address reaches no filter's or mail daemon's journal line; rspamd's
        own verdict lines (info level in the test inventory) are there to be searched."""
        units = [
            "-u",
            "rspamd.service",
            "-u",
            "clamav-daemon.service",
            "-u",
            "redis-server.service",
        ]
        units += ["-u", "postfix@-.service", "-u", "dovecot.service"]
        run("journalctl", "--sync", check=False)
        lines = run(
            "journalctl",
            "--no-pager",
            "-o",
            "short-precise",
            "-b",
            f"--after-cursor={after}",
            *units,
        ).splitlines()
        leaked = [line for line in lines if FILTER_CLIENT in line]
        assert not leaked, "\n".join(leaked[-10:])
        verdicts = [line for line in lines if "rspamd" in line and "add header" in line]
        assert verdicts, "no rspamd verdict line in the journal: nothing was searched"
        return f"{len(lines)} lines searched, {len(verdicts)} verdict line(s), no {FILTER_CLIENT}"


# A customer domain of the VM check's (mta-sts.<it> is pointed at the VM in /etc/hosts).
CUSTOMER_DOMAIN = "customer.example"


class Acme:
    """tls mode acme against a real ACME server: pebble (copied into the VM by the host) on
    loopback, validating HTTP-01 through the deployment's nginx on port 80, as Let's Encrypt
    would. The deployment's own request command and certbot's renewal are what run."""

    PEBBLE = "/ci/pebble"
    DIRECTORY = "https://localhost:14000/dir"
    LIVE = Path("/etc/letsencrypt/live/ddmail")
    SERVED = ("https 443", "smtp 25", "submission 587", "smtps 465", "imaps 993")

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.home = Path("/root/ci-pebble")
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.proc: subprocess.Popen[bytes] | None = None
        self.issued_serial = ""

    def start_server(self) -> str:
        """Pebble's HTTPS gets a certificate of its own; the inventory named where its CA
        lies on the host (ddmail_acme_ca_bundle), as an operator of a private ACME CA would."""
        assert self.cfg["acme_server"] == self.DIRECTORY, self.cfg["acme_server"]
        self.home.mkdir(mode=0o700, exist_ok=True)
        key, cert = self.home / "key.pem", self.home / "cert.pem"
        run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-noenc", "-keyout", str(key), "-out", str(cert), "-days", "30",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            env={**os.environ, "OPENSSL_CONF": "/dev/null"},
        )  # fmt: skip
        bundle = Path(self.cfg["acme_ca_bundle"])
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cert, bundle)
        config = self.home / "pebble.json"
        settings = {
            "listenAddress": "127.0.0.1:14000",
            "managementListenAddress": "127.0.0.1:15000",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": 80,  # HTTP-01 as on the Internet: the deployment's nginx answers
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        config.write_text(json.dumps({"pebble": settings}))
        # No artificial validation delay and no random nonce rejections: a fast, stable run.
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        log = open(self.home / "pebble.log", "wb")  # noqa: SIM115 - kept open for pebble
        self.proc = subprocess.Popen(
            [self.PEBBLE, "-config", str(config)], stdout=log, stderr=log, env=env
        )
        self.tls.load_verify_locations(cafile=str(bundle))
        wait_until("pebble", lambda: self.fetch("localhost", 14000, "/dir"), 60, 1)
        root = self.fetch("localhost", 15000, "/roots/0")
        (self.home / "root.pem").write_text(root)
        return f"pebble on {self.DIRECTORY}, its root CA fetched"

    def fetch(self, host: str, port: int, path: str) -> str:
        conn = http.client.HTTPSConnection(host, port, context=self.tls, timeout=30)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            body = answer.read().decode()
        finally:
            conn.close()
        assert answer.status == 200, (answer.status, body[-300:])
        return body

    def served(self, what: str) -> bytes:
        """The leaf certificate (DER) a port serves, verified against pebble's root for the
        name a client uses there."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.home / "root.pem"))
        service, port = what.split()
        host = self.cfg["panel_host"] if service == "https" else self.cfg["mail_host"]
        with contextlib.ExitStack() as stack:
            if service == "https":
                conn = http.client.HTTPSConnection(host, 443, context=ctx, timeout=30)
                stack.callback(conn.close)
                conn.connect()
                sock: Any = conn.sock
            elif service == "imaps":
                imap = stack.enter_context(imaplib.IMAP4_SSL(host, 993, ssl_context=ctx))
                sock = imap.sock
            elif service == "smtps":
                sock = stack.enter_context(smtplib.SMTP_SSL(host, 465, context=ctx)).sock
            else:
                smtp = stack.enter_context(smtplib.SMTP(host, int(port), timeout=30))
                smtp.starttls(context=ctx)
                sock = smtp.sock
            der: bytes = sock.getpeercert(binary_form=True)
        return der

    def serial_everywhere(self) -> str:
        """Every TLS port serves the same ACME certificate (verified), with the host's key."""
        key = run("openssl", "pkey", "-in", "/etc/ssl/ddmail/mail.key", "-pubout")
        serials = set()
        for what in self.SERVED:
            der = self.served(what)
            text = subprocess.run(
                ["openssl", "x509", "-inform", "DER", "-noout", "-serial", "-pubkey"],
                input=der, capture_output=True, check=True,
            ).stdout.decode()  # fmt: skip
            serial, _, pubkey = text.partition("\n")
            assert pubkey.strip() == key.strip(), f"{what} serves another key than mail.key"
            serials.add(serial)
        assert len(serials) == 1, serials
        return serials.pop()

    def rollover(self) -> str:
        """A TLS key rollover (DN 42) in acme mode: prepare has certbot issue a new key into the
        .next files while every port keeps serving the old one; switch serves the new one on
        every port (the reload command under systemd and AppArmor); finish forgets the old
        pair. The VM's DNS has no DNSSEC zone of ours, so the switch skips the DNS wait."""
        key = "/etc/ssl/ddmail/mail.key"
        before = run("openssl", "pkey", "-in", key, "-pubout")
        served = self.serial_everywhere()
        prepared = admin("tls", "rollover", "prepare")
        assert "TLSA" in prepared, prepared
        upcoming = run("openssl", "pkey", "-in", key + ".next", "-pubout")
        assert upcoming != before, "prepare made no new key"
        assert self.serial_everywhere() == served, "prepare changed what the ports serve"
        admin("tls", "rollover", "switch", "--no-dns-check")
        assert run("openssl", "pkey", "-in", key, "-pubout") == upcoming
        switched = wait_until("the next key served", self.serial_everywhere, 60)
        assert switched != served
        admin("tls", "rollover", "finish")
        assert not Path(key + ".previous").exists()
        assert admin("tls", "rollover", "status").strip() == "no rollover under way"
        return f"{served} -> {switched}, new key on every port"

    def request(self) -> str:
        """What the playbook runs once nginx is up: the deployment's request command."""
        out = run("/usr/local/sbin/ddmail-acme-request", timeout=600)
        assert (self.LIVE / "fullchain.pem").exists(), out
        self.issued_serial = wait_until("the daemons reloaded", self.serial_everywhere, 60)
        return f"{self.issued_serial} on {', '.join(self.SERVED)}"

    def renew(self) -> str:
        """A renewal as certbot.timer makes it (forced: the certificate is not due), with the
        environment the certbot unit has: same key (--reuse-key), new certificate, and the
        deploy hook reloaded every daemon."""
        before = run("openssl", "pkey", "-in", "/etc/ssl/ddmail/mail.key", "-pubout")
        shown = run("systemctl", "show", "-p", "Environment", "--value", "certbot.service")
        unit_env = dict(item.split("=", 1) for item in shown.split())
        assert unit_env.get("REQUESTS_CA_BUNDLE") == self.cfg["acme_ca_bundle"], shown
        run(
            "certbot", "renew", "--force-renewal", "--cert-name", "ddmail",
            "--no-random-sleep-on-renew", "--non-interactive",
            env={**os.environ, **unit_env}, timeout=600,
        )  # fmt: skip
        after = run("openssl", "pkey", "-in", "/etc/ssl/ddmail/mail.key", "-pubout")
        assert after == before, "the renewal changed the key (a DANE 3 1 1 record would break)"
        renewed = wait_until(
            "the renewed certificate served",
            lambda: (s := self.serial_everywhere()) != self.issued_serial and s,
            60,
        )
        return f"{self.issued_serial} -> {renewed}, same key"

    def customer_policy_host(self) -> str:
        """A verified customer domain's MTA-STS policy host (DN 40): root's timer job gets the
        name a certificate of its own from the ACME server (a certbot lineage of that name, put
        where nginx picks it by SNI, no reload), and senders get the policy under it. The VM has
        no DNS to verify a domain through, so the backend's row is written as verification
        writes it (the stack's integration test verifies through NSD)."""
        name = f"mta-sts.{CUSTOMER_DOMAIN}"
        with open("/etc/hosts", "a") as hosts:  # pebble validates HTTP-01 through nginx here
            hosts.write(f"127.0.0.1 {name}  # ddmail-ci\n")
        row = (
            "INSERT INTO backend_domains (name, kind, account, enabled, verified, token,"
            f" created_at, checked_at) VALUES ('{CUSTOMER_DOMAIN}', 'account', 'ci-account',"
            " true, true, 'ci', extract(epoch from now())::integer,"
            " extract(epoch from now())::integer)"  # checked now: no re-verification soon
        )
        run("runuser", "-u", "postgres", "--", "psql", "-q", "-v", "ON_ERROR_STOP=1", "-d",
            "ddmail", "-c", row)  # fmt: skip
        run("systemctl", "start", "ddmail-mta-sts-certificates.service", timeout=600)
        directory = Path("/etc/ssl/ddmail/mta-sts")
        found = sorted(p.name for p in directory.iterdir())
        # Other names may have failed (the smoke test's new global domain: its policy host
        # does not point here); this one must have its pair and no failure marker.
        mine = {f"{name}.key", f"{name}.pem"}
        lineage = Path("/etc/letsencrypt/live") / name / "fullchain.pem"
        if not lineage.exists() or not mine <= set(found) or f".{name}.failed" in found:
            unit = "ddmail-mta-sts-certificates.service"
            journal = run("journalctl", "-u", unit, "-n", "40", check=False)
            raise AssertionError(f"{directory}: {found}\n{journal}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.home / "root.pem"))
        conn = http.client.HTTPSConnection(name, 443, context=ctx, timeout=30)
        try:
            conn.request("GET", "/.well-known/mta-sts.txt")
            answer = conn.getresponse()
            policy = answer.read().decode()
            conn.request("GET", "/")
            other = conn.getresponse()
            other.read()
        finally:
            conn.close()
        assert answer.status == 200, (answer.status, policy[-300:])
        assert f"\r\nmx: {self.cfg['mail_host']}\r\n" in policy, policy
        assert other.status == 404, other.status  # only the policy under that name
        return f"{name}: certificate from the ACME server, policy served ({answer.status})"

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)


def dkim_signed(smoke: Smoke, report: Report) -> str:
    """The message the sink got carries the global domain's signature (selector ddm1); the
    message, the zone the operator would publish and the key list go into the result, and the
    host verifies the signature with dkimpy (test_vm.py): this interpreter has no DKIM code."""
    assert smoke.sink is not None
    wanted = f"outgoing {smoke.marker}".encode()
    (message,) = [m for m in smoke.sink.messages if wanted in m]
    head = message.split(b"\r\n\r\n")[0].decode()
    signature = re.search(r"^DKIM-Signature:.*?(?=^\S)", head + "\r\nX:", re.M | re.S)
    assert signature, head
    tags = re.sub(r"\s+", "", signature.group(0))
    assert f"d={smoke.domain};" in tags and "s=ddm1;" in tags, tags
    key = Path(toml_setting("dkim", "key_dir")) / f"{smoke.domain}.ddm1.key"
    st = key.stat()
    owner = (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, oct(st.st_mode))
    assert owner == ("ddmail-backend", "ddmail-dkim", "0o100640"), owner
    report.data["dkim"] = {
        "message": message.decode("utf-8", "replace"),
        "zone": admin("dns", "zone"),
        "keys": admin("dkim", "list"),
    }
    return f"{tags[:120]}...; key file {owner}"


def dkim_key_file(cfg: dict[str, Any]) -> str:
    return str(Path(toml_setting("dkim", "key_dir")) / f"{cfg['global_domain']}.ddm1.key")


def toml_setting(section: str, name: str) -> Any:
    with open(CONFIG, "rb") as config:
        return tomllib.load(config)[section][name]


def zone_signed() -> str:
    """ddmail-zone-sign.service (its timer's job) under its AppArmor profile: the global
    domain's DNSSEC-signed zone in /var/lib/ddmail/zones for a name server, DS on top."""
    try:
        systemctl("start", "ddmail-zone-sign.service")
    except AssertionError:
        unit = "ddmail-zone-sign.service"
        raise AssertionError(run("journalctl", "-u", unit, "-n", "40", check=False)) from None
    zone = Path("/var/lib/ddmail/zones/example.org.zone")
    text = zone.read_text()
    for part in ("RRSIG", "DNSKEY", "; DS record for the registrar", "NS ns1.example.org."):
        assert part in text, (part, text[:400])
    assert zone.stat().st_mode & 0o777 == 0o644, oct(zone.stat().st_mode)
    return f"{zone}: {len(text.splitlines())} lines, signed"


def admin(*args: str) -> str:
    """`ddmail admin ...` as the operator runs it: as root with the server's config (it drops
    to ddmail-admin for the database, whose peer authentication has no role for root)."""
    return run(str(VENV_BIN / "ddmail"), "admin", *args, "--config", CONFIG)


# --- AppArmor ---------------------------------------------------------------------------


def aa_processes() -> list[dict[str, str]]:
    """[{exe, profile, status, pid}] of every confined process, from `aa-status --json`."""
    status = json.loads(run("aa-status", "--json"))
    return [
        {"exe": exe, **{k: str(v) for k, v in proc.items()}}
        for exe, procs in status.get("processes", {}).items()
        for proc in procs
    ]


def confinement() -> str:
    # imap-login and smtpd run only while a client is connected (and smtpd a while after):
    # hold a connection open to each so that their processes exist when aa-status looks.
    with contextlib.ExitStack() as held:
        for port in (993, 25):
            conn = held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
            if port == 25:
                conn.recv(512)  # the banner: smtpd is up
        time.sleep(1)  # Dovecot hands the connection to a login process
        procs = aa_processes()
    missing = []
    for profile in DDMAIL_PROFILES:
        if not any(p["profile"] == profile and p["status"] == "enforce" for p in procs):
            missing.append(f"profile {profile}")
    for exe in CONFINED_EXES:
        if not any(p["exe"] == exe and p["status"] == "enforce" for p in procs):
            missing.append(f"exe {exe}")
    listing = "\n".join(f"{p['exe']} {p['profile']} {p['status']}" for p in procs)
    assert not missing, f"not confined in enforce mode: {missing}\n{listing}"
    return listing


def journal_cursor() -> str:
    out = run("journalctl", "-n", "0", "--show-cursor", "--no-pager", check=False)
    return out.strip().rpartition("cursor: ")[2]


def journal_lines(after: str = "") -> list[str]:
    run("journalctl", "--sync", check=False)
    argv = ["journalctl", "--no-pager", "-o", "short-precise", "-b"]
    if after:
        argv.append(f"--after-cursor={after}")
    return run(*argv, check=False).splitlines()


def denials(after: str = "") -> list[str]:
    return [line for line in journal_lines(after) if DENIED in line]


# Error lines of Dovecot (Error:/Fatal:/Panic:) and Postfix (fatal:/panic:), which reach the
# journal through ddmail-logwrap: a normal session logs none (as in the local stack's tests).
DAEMON_ERROR = re.compile(r"ddmail-logwrap\[\d+\]: .*\b(Error|Fatal|Panic|fatal|panic):")


def daemon_errors(after: str) -> list[str]:
    return [line for line in journal_lines(after) if DAEMON_ERROR.search(line)]


PROBE = """
import errno, json, os, socket, sys
kind, target = sys.argv[1], sys.argv[2]
families = {"tcp": socket.AF_INET, "udp": socket.AF_INET, "tcp6": socket.AF_INET6}
try:
    if kind == "read":
        if os.path.isdir(target):
            os.listdir(target)
        else:
            open(target, "rb").read(1)
    else:
        host, port = target.rsplit(":", 1)
        kinds = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        s = socket.socket(families[kind], kinds)
        s.settimeout(5)
        s.connect((host.strip("[]"), int(port)))
        s.send(b"x")
    code = 0
except OSError as exc:  # a timeout has no errno: nothing ever answered
    code = exc.errno or errno.ETIMEDOUT
print(json.dumps({"pid": os.getpid(), "errno": code, "name": errno.errorcode.get(code, "")}))
"""
# What a confined service runs: the deployment's interpreter (the profiles allow exactly it).
PROBE_PYTHON = str(VENV_BIN / "python3")


class Probes:
    """Actions a profile must deny, each also run unconfined by the same user as the control, so
    file modes and routes are the same and only the confinement differs. AppArmor logs nothing
    for an explicit `deny` rule; the PIDs mark the denials it does log."""

    def __init__(self) -> None:
        self.pids: list[str] = []

    def probe(
        self, user: str, profile: str | None, kind: str, target: str, cgroup: str = ""
    ) -> dict[str, Any]:
        confine = ["aa-exec", "-p", profile, "--"] if profile else []
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        argv += [*confine, PROBE_PYTHON, "-c", PROBE, kind, target]
        if cgroup:
            # Join the running unit's cgroup first (as root), so its IP filter applies too.
            procs = f"/sys/fs/cgroup{cgroup}/cgroup.procs"
            argv = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "probe", *argv]
        out = run(*argv)
        answer: dict[str, Any] = json.loads(out)
        if profile:
            self.pids.append(str(answer["pid"]))
        return answer

    def denied(self, user: str, profile: str, kind: str, target: str) -> str:
        """As USER (whom the file modes let through), PROFILE must refuse with EACCES;
        unconfined, USER gets through (or, for the network, fails otherwise: no route)."""
        control = self.probe(user, None, kind, target)
        confined = self.probe(user, profile, kind, target)
        assert confined["errno"] == errno.EACCES, f"{profile} allowed it: {confined}"
        assert control["errno"] != errno.EACCES, f"the control was refused too: {control}"
        pid = confined["pid"]
        logged = [d for d in denials() if f"pid={pid} " in d]
        return f"confined {confined}, control {control}\n" + "\n".join(logged)

    def unit_refuses(self, unit: str, user: str, profile: str, target: str) -> str:
        """TCP to a non-loopback address from inside UNIT's confinement: its AppArmor profile
        (which cannot name addresses on this kernel and allows inet stream for the loopback
        listener) together with its cgroup's IPAddressDeny=any filter, which drops the SYN (EPERM
        or, for TCP, no answer before the timeout). The VM has no
        network card, so the address is put on lo: the control then reaches it (refused: no
        listener) and only the unit's filter can stop the confined probe."""
        add_address_to_lo(target.rpartition(":")[0])
        cgroup = run("systemctl", "show", "-P", "ControlGroup", unit).strip()
        assert cgroup, f"{unit} has no cgroup (not running?)"
        control = self.probe(user, None, "tcp", target)
        confined = self.probe(user, profile, "tcp", target, cgroup)
        stopped = (errno.EPERM, errno.EACCES, errno.ETIMEDOUT)
        assert confined["errno"] in stopped, f"{unit} got out: {confined}"
        assert control["errno"] == errno.ECONNREFUSED, f"the control got no answer: {control}"
        return f"confined {confined}, control {control}"

    def marked(self, line: str) -> bool:
        return any(f"pid={pid} " in line for pid in self.pids)


def add_address_to_lo(address: str) -> None:
    """`ip addr add ADDRESS/32 dev lo` over rtnetlink (iproute2 may not be installed)."""
    rtm_newaddr, ifa_address, ifa_local = 20, 1, 2
    flags = 0x1 | 0x4 | 0x400  # NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
    raw = socket.inet_aton(address)
    attrs = b"".join(struct.pack("=HH", 8, kind) + raw for kind in (ifa_local, ifa_address))
    body = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, socket.if_nametoindex("lo")) + attrs
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.send(struct.pack("=IHHII", 16 + len(body), rtm_newaddr, flags, 1, 0) + body)
        answer = nl.recv(4096)
    code = struct.unpack_from("=i", answer, 16)[0]
    assert code in (0, -errno.EEXIST), f"rtnetlink: {os.strerror(-code)}"


# --- backup and restore -----------------------------------------------------------------


def newest_backup(backup_dir: Path) -> Path:
    found = sorted(backup_dir.glob("ddmail-*.tar.gpg"))
    assert found, f"no backup in {backup_dir}"
    return found[-1]


def systemctl(action: str, *units: str) -> None:
    run("systemctl", action, *units, timeout=300)


def wipe_state(cfg: dict[str, Any]) -> str:
    """What a lost machine loses, i.e. everything a backup holds: the database (dropped and
    made again empty, as on a new host), the maildirs, the secrets, the DKIM and zone keys, the
    TLS key and certificate and the onion and I2P keys (`[backup] paths`)."""
    systemctl("stop", *RESTORE_STOPS)
    db = cfg["database_name"]
    run(*AS_POSTGRES, "dropdb", "--if-exists", db, cwd="/")
    run(*AS_POSTGRES, "createdb", db, cwd="/")
    with open(CONFIG, "rb") as config:
        settings = tomllib.load(config)
    extra = [Path(p) for p in settings.get("backup", {}).get("paths", [])]
    extra.append(Path(settings["dkim"]["key_dir"]))  # the DKIM keys (DN 38)
    if "dnssec_key_dir" in settings.get("zone", {}):  # the zone signer's keys (DN 42)
        extra.append(Path(settings["zone"]["dnssec_key_dir"]))
    for path in (Path(cfg["mail_root"]), Path(cfg["secrets_dir"]), *extra):
        children = list(path.iterdir()) if path.is_dir() else [path]
        for child in children:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink(missing_ok=True)
    return f"database {db} dropped and made again; emptied {cfg['mail_root']}, " + ", ".join(
        [cfg["secrets_dir"], *map(str, extra)]
    )


def restore(cfg: dict[str, Any], backup: Path) -> str:
    """As docs/operations.md says: the operator's secret key (made by the test harness on the
    host) in a gpg home given with --homedir, `ddmail admin backup restore` as root, then
    `ddmail admin db migrate` as postgres, then everything started again."""
    home = Path("/root/ci-gnupg")
    home.mkdir(mode=0o700, exist_ok=True)
    run("gpg", "--batch", "--homedir", str(home), "--import", cfg["backup_secret_key"])
    ddmail = str(VENV_BIN / "ddmail")
    argv = [ddmail, "admin", "backup", "restore", str(backup), "--homedir", str(home)]
    out = run(*argv, "--config", CONFIG, timeout=600)
    # As root: it reads the config, then becomes postgres itself.
    out += run(ddmail, "admin", "db", "migrate", "--config", CONFIG, cwd="/")
    systemctl("start", *RESTORE_STOPS)
    return out.strip()


# --- main -------------------------------------------------------------------------------


def main(config_path: str, result_path: str) -> int:
    report = Report(Path(result_path))
    try:
        checks(json.loads(Path(config_path).read_text()), report)
    except Exception:  # a bug here must still come back as a report, not as silence
        report.add("the check script itself", False, traceback.format_exc())
    with contextlib.suppress(Exception):
        report.data["diagnostics"] = diagnostics()[-20000:]
    report.data["finished"] = True
    report.write()
    return 0 if all(c["ok"] for c in report.data["checks"]) else 1


def diagnostics() -> str:
    """Facts for reading a failure from outside: sockets, identities, the DDMail units."""
    commands = (
        ["sh", "-c", "ls -lnd /run/ddmail* && ls -ln /run/ddmail* /run/dovecot 2>&1"],
        ["sh", "-c", "for u in www-data postfix vmail $(ls /var/lib/ddmail); do id $u; done"],
        ["systemctl", "status", "--no-pager", "-n", "5", "ddmail-*", "postfix@-", "dovecot"],
    )
    return "\n".join(run(*argv, check=False, timeout=60) for argv in commands)


def checks(cfg: dict[str, Any], report: Report) -> None:
    check = report.check
    check("boot settled", boot_settled)
    check("no failed unit", no_failed_unit)
    check("DDMail units and daemons active", units_active)
    smoke = Smoke(cfg)
    check("test host names on loopback, the deployment's CA trusted", smoke.hosts)
    check("sink transport for sink.test", smoke.sink_transport)
    filters = Filters(smoke)
    check("filters: rspamd's milter socket accepts, clamd answers", filters.ready)
    start = journal_cursor()
    smoke_ok = all(
        check(name, step)
        for name, step in (
            ("panel: register over HTTPS with the key file", smoke.register),
            ("operator: account made gratis and enabled", smoke.fund),
            ("panel: log in with user, password and key file", smoke.login),
            ("panel: add a mailbox", smoke.add_mailbox),
            ("mail: delivered on port 25", smoke.deliver),
            ("mail: a TLS report to tlsrpt@ is parsed and listed", smoke.tls_report),
            ("mail: read over IMAPS with the mailbox password", smoke.read_back),
            ("mail: stored file is mail_crypt ciphertext", smoke.stored_encrypted),
            ("mail: submission on 587 relays to the outside sink", smoke.submit),
            (
                "mail: what left is DKIM-signed with the domain's key",
                partial(dkim_signed, smoke, report),
            ),
            ("web: the MTA-STS policy host serves the policy", smoke.mta_sts_policy),
            ("operator: a new global domain receives mail at once", smoke.new_global_domain),
        )
    )
    if smoke.address:
        for name, step in (
            ("filters: GTUBE refused at DATA with 5xx, nothing stored", filters.gtube_refused),
            (
                "filters: EICAR refused at DATA with 5xx, nothing stored",
                partial(filters.malware_refused, EICAR, "Eicar-Test-Signature"),
            ),
            (
                "filters: the local database's own signature refused (clamd's database)",
                partial(filters.malware_refused, OWN_SIGNATURE[1], OWN_SIGNATURE[0]),
            ),
            ("filters: a Junk-score message filed into Junk, read over IMAPS", filters.junk_filed),
        ):
            check(name, step)
    check("filters: clamd's and Redis's sockets only for their groups", filters.sockets)
    check("filters: Redis listens on no TCP port", filters.redis_no_tcp)
    resolver = Resolver(add_address_to_lo)
    for name, step in (
        (
            "resolver: Unbound and mta-sts-daemon active, confined in enforce mode",
            resolver.confined,
        ),
        ("resolver: unbound-checkconf accepts the configuration", resolver.checkconf),
        ("resolver: Unbound answers on loopback only", resolver.loopback_only),
        ("resolver: resolv.conf names Unbound with trust-ad after boot", resolver.resolv_conf),
        ("resolver: Postfix's client uses DANE, DNSSEC and the MTA-STS map", resolver.postfix),
        ("resolver: the MTA-STS socketmap answers promptly", resolver.socketmap),
        ("resolver: no query name in the journal", resolver.nothing_logged),
        # It restarts Unbound with two signed test zones, then puts its configuration back.
        (
            "resolver: DNSSEC validated offline, posttls-finger verifies port 25 by DANE",
            resolver.dane,
        ),
    ):
        check(name, step)
    anonymity = Anonymity()
    check("anonymity: tor and i2pd active, confined in enforce mode", anonymity.confined)
    check(
        "anonymity: the onion and I2P keys exist, tor's hostname and i2pd's destination are "
        "the addresses we compute",
        anonymity.keys,
    )
    if smoke.address:
        check(
            "anonymity: the loopback listeners answer: the panel over HTTP without HSTS, IMAP "
            "LOGIN and submission AUTH without TLS",
            partial(anonymity.listeners, smoke.address, smoke.password),
        )
    check(
        "filters: no client address in the journal of rspamd, clamd, Redis, Postfix, Dovecot",
        partial(filters.no_client_address_logged, start),
    )
    acme = Acme(cfg)
    try:
        started = check("acme: pebble serves ACME on loopback", acme.start_server)
        if started:  # from here on the daemons serve a certificate of pebble's CA
            smoke.tls.load_verify_locations(cafile=str(acme.home / "root.pem"))
        if started and check(
            "acme: the request command got a certificate, served on every TLS port",
            acme.request,
        ):
            check("acme: a renewal keeps the key and every daemon serves the new one", acme.renew)
            check("acme: a TLS key rollover serves the new key on every port", acme.rollover)
            check(
                "acme: a verified customer domain's mta-sts host gets its own certificate and "
                "serves the policy",
                acme.customer_policy_host,
            )
    finally:
        acme.stop()
    if smoke_ok:

        def confined_while_busy() -> str:
            with smoke.daemons_busy():
                return confinement()

        check("AppArmor: DDMail processes and daemons in enforce mode", confined_while_busy)
    else:
        check("AppArmor: DDMail processes and daemons in enforce mode", confinement)
    check("units still active, none restarted, after the smoke test", units_active)
    smoke_denials = denials(start)
    errors = daemon_errors(start)
    report.add(
        "journal: no error line from Postfix or Dovecot during the smoke test",
        not errors,
        "\n".join(errors[-20:]) or "none",
    )
    report.add(
        "journal: no AppArmor denial during the smoke test",
        not smoke_denials,
        "\n".join(smoke_denials) or "none",
    )
    probes = Probes()
    # The new mailbox's maildir once mail arrived; the mail root itself otherwise.
    stored = smoke.stored_files() if smoke.address else []
    maildir = str(stored[0].parent.parent if stored else Path(cfg["mail_root"]))
    keyhandler = ("ddmail-keyhandler", "ddmail-keyhandler")
    for what, user, profile, kind, target in (
        ("an outbound UDP socket", *keyhandler, "udp", f"{OUTSIDE}:53"),
        ("an outbound IPv6 socket", *keyhandler, "tcp6", f"[{OUTSIDE6}]:25"),
        ("a maildir", "vmail", "ddmail-keyhandler", "read", maildir),
        ("the backend's key", "ddmail-keyhandler", "ddmail-web", "read", cfg["backend_key"]),
        ("a maildir", "vmail", "ddmail-web", "read", maildir),
        # It makes the DKIM keys and may delete them, but never reads one back (DN 38).
        ("a DKIM private key", "ddmail-backend", "ddmail-backend", "read", dkim_key_file(cfg)),
    ):
        check(
            f"probe: {profile} denied {what}", partial(probes.denied, user, profile, kind, target)
        )
    check(
        "probe: the keyhandler unit refused a TCP connection to a non-loopback address",
        # Port 9: nothing listens there (Postfix would answer on 25 once the address is local).
        partial(probes.unit_refuses, "ddmail-keyhandler.service", *keyhandler, f"{OUTSIDE}:9"),
    )
    stray = [line for line in denials() if not probes.marked(line)]
    report.add(
        "journal: every AppArmor denial of the boot is a marked probe's",
        not stray,
        "\n".join(stray) or f"none besides the probes {probes.pids}",
    )
    check("zone: the daily signer writes each global domain's signed zone", zone_signed)
    if smoke_ok:
        backups = Path(cfg["backup_dir"])
        before = set(backups.glob("ddmail-*.tar.gpg")) if backups.exists() else set()

        def backup() -> str:
            systemctl("start", "ddmail-backup.service")
            made = newest_backup(backups)
            assert made not in before, "the backup unit wrote no new file"
            data = made.read_bytes()
            assert (made.stat().st_mode & 0o777) == 0o600, oct(made.stat().st_mode)
            assert smoke.marker.encode() not in data and smoke.password.encode() not in data
            return f"{made.name}: {len(data)} bytes, 0600, no plaintext marker"

        if check("backup: the nightly unit run now", backup):
            made = newest_backup(backups)
            if check("backup: state wiped", lambda: wipe_state(cfg)) and check(
                "backup: restored", lambda: restore(cfg, made)
            ):
                check("backup: units active after the restore", units_active)
                check(
                    "backup: the restored onion and I2P keys give the same addresses",
                    anonymity.restored,
                )
                if check(
                    "backup: the earlier mail read again with the same password", smoke.read_back
                ):
                    check("panel: a removed mailbox's maildir is erased", smoke.remove_mailbox)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
