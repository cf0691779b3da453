"""The mail daemons' outer surface on a real stack: no LMTP side door, TLS suites, the
unprivileged auth-worker, and what a mail client is told to connect to."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import socket
import ssl
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from tests.integration.test_mail_flow import fetch_all, stored_files
from tests.integration.test_openpgp_delivery import Recipient, new_recipient
from tests.stackrun import RunningStack, wait_until

# --- item: LMTP only through Postfix and the OpenPGP stage -----------------------------------


def _descendants(roots: set[int]) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int(
                (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            )
        except (OSError, IndexError, ValueError):
            continue
    found = set(roots)
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found


def _listening_ports(pids: set[int]) -> set[int]:
    """TCP ports on which any of PIDS listens (IPv4 or IPv6, any address)."""
    inodes: set[str] = set()
    for pid in pids:
        with_fds = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd) for fd in with_fds.iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def stack_tcp_ports(stack: RunningStack) -> set[int]:
    """Every TCP port a process of the stack listens on: its tree, and services that tests
    restarted (found by their pid files)."""
    roots = {stack.proc.pid}
    for pid_file in (stack.root / "run").glob("*.pid"):
        try:
            roots.add(int(pid_file.read_text()))
        except (OSError, ValueError):
            continue
    return _listening_ports(_descendants(roots))


def speak_lmtp(port: int, recipient: str, raw: bytes, tls: ssl.SSLContext | None) -> bytes:
    """One LMTP transaction to PORT, whatever answers; returns all replies."""
    replies = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as plain:
            conn = plain if tls is None else tls.wrap_socket(plain, server_hostname="localhost")
            for line in (
                None,  # the greeting
                b"LHLO attacker.example\r\n",
                b"MAIL FROM:<attacker@example.org>\r\n",
                f"RCPT TO:<{recipient}>\r\n".encode(),
                b"DATA\r\n",
                raw + b"\r\n.\r\n",
                b"QUIT\r\n",
            ):
                if line is not None:
                    conn.sendall(line)
                try:
                    reply = conn.recv(4096)
                except TimeoutError:
                    reply = b""
                if not reply and line is None:
                    break  # no greeting: not a mail server, stop waiting
                replies += reply
    except (OSError, ssl.SSLError):
        pass
    return replies


@pytest.fixture
def pgp_recipient(stack: RunningStack, tmp_path: Path) -> Iterator[Recipient]:
    yield new_recipient(stack, tmp_path / "gpg")
    subprocess.run(["gpgconf", "--homedir", str(tmp_path / "gpg"), "--kill", "all"], check=False)


def test_no_loopback_tcp_port_of_the_stack_delivers_lmtp(
    stack: RunningStack, pgp_recipient: Recipient
) -> None:
    ports = stack_tcp_ports(stack)
    # The enumeration sees the stack's listeners (else this test would prove nothing) ...
    for name in ("smtp_port", "submission_port", "smtps_port", "imaps_port"):
        assert stack.info[name] in ports, (name, ports)
    # ... and Dovecot's former LMTP port is gone, as is the contract key that named it.
    assert "lmtp_port" not in stack.info
    assert stack.info["port_base"] + 24 not in ports

    marker = f"sidedoor-{uuid.uuid4().hex}"
    raw = (
        f"From: attacker@example.org\r\nTo: {pgp_recipient.address}\r\n"
        f"Subject: {marker}\r\n\r\n{marker}\r\n"
    ).encode()
    insecure = ssl.create_default_context(cafile=stack.info["tls_ca"])
    for port in sorted(ports):
        for tls in (None, insecure):
            speak_lmtp(port, pgp_recipient.address, raw, tls)
    subprocess.run(["postqueue", "-c", str(stack.root / "etc" / "postfix"), "-f"], check=False)
    time.sleep(3)
    assert not stored_files(stack, pgp_recipient.address), "LMTP over TCP delivered mail"

    # The one way in still works, and the mailbox gets the message encrypted only.
    control = f"control-{uuid.uuid4().hex}"
    stack.deliver(pgp_recipient.address, "control", control)
    wait_until(lambda: stored_files(stack, pgp_recipient.address), 60, "the control message")
    messages = fetch_all(stack, pgp_recipient.address, pgp_recipient.password)
    assert len(messages) == 1
    assert marker.encode() not in messages[0]
    assert control.encode() not in messages[0]  # PGP/MIME: no plaintext by any path
    assert control.encode() in pgp_recipient.decrypt(messages[0])


def test_dovecot_lmtp_socket_is_for_the_stage_alone(stack: RunningStack) -> None:
    dovecot_lmtp = stack.root / "run" / "dovecot" / "lmtp"
    st = dovecot_lmtp.stat()
    assert stat.S_ISSOCK(st.st_mode)
    # Owner: the stage's user (root in the local stack); nobody else, Postfix included.
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0
    stage_socket = stack.root / "run" / "pgpstage.sock"
    stage = stage_socket.stat()
    assert stat.S_IMODE(stage.st_mode) == 0o660
    assert grp.getgrgid(stage.st_gid).gr_name == "postfix"
    assert stack.postconf("virtual_transport") == f"lmtp:unix:{stage_socket}"


# --- item: no client names in logs ---------------------------------------------------------------


def test_postfix_never_looks_up_client_names(stack: RunningStack) -> None:
    assert stack.postconf("smtpd_peername_lookup") == "no"
    with stack.smtp() as s:
        s.ehlo("client.example.org")
    # 127.0.0.1 is "localhost" in /etc/hosts: with a lookup the redactor would have had to hide
    # the name ("[host][ip]"); without one Postfix itself writes "unknown".
    log = stack.log_dir / "postfix.log"
    wait_until(lambda: "connect from unknown[ip]" in log.read_text(), 10, "a connect line")
    assert "connect from [host]" not in log.read_text()


# --- item: TLS suites --------------------------------------------------------------------------

ANONYMOUS = "aNULL:@SECLEVEL=0"  # SECLEVEL 0: the client offers them; only the server refuses
CBC = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0"
AEAD = "ECDHE-ECDSA-AES128-GCM-SHA256"
# (port, STARTTLS protocol for openssl s_client or None for implicit TLS)
TLS_PORTS = (
    ("smtps_port", None),
    ("submission_port", "smtp"),
    ("imaps_port", None),
    ("web_port", None),
)


def port_of(stack: RunningStack, name: str) -> int:
    """A port of stack.json; the panel's is part of web_url."""
    if name == "web_port":
        return int(urlsplit(stack.info["web_url"]).port or 443)
    return int(stack.info[name])


def negotiated_cipher(port: int, ciphers: str, starttls: str | None) -> str:
    """The TLS 1.2 cipher `openssl s_client` gets from PORT with CIPHERS ("" when refused)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"]
    argv += ["-cipher", ciphers, "-servername", "localhost"]
    if starttls:
        argv += ["-starttls", starttls]
    result = subprocess.run(
        argv, input=b"", capture_output=True, timeout=30, check=False, stdin=None
    )
    for line in result.stdout.decode(errors="replace").splitlines():
        if ", Cipher is " in line:
            cipher = line.rsplit(" ", 1)[1]
            return "" if cipher == "(NONE)" else cipher
    return ""


@pytest.mark.parametrize(("port_name", "starttls"), TLS_PORTS)
def test_anonymous_and_cbc_suites_are_refused(
    stack: RunningStack, port_name: str, starttls: str | None
) -> None:
    port = port_of(stack, port_name)
    assert negotiated_cipher(port, AEAD, starttls) == AEAD  # the probe itself works
    assert negotiated_cipher(port, ANONYMOUS, starttls) == ""
    assert negotiated_cipher(port, CBC, starttls) == ""


@pytest.mark.parametrize(("port_name", "starttls"), TLS_PORTS)
def test_the_server_chooses_the_cipher_order(
    stack: RunningStack, port_name: str, starttls: str | None
) -> None:
    # The client prefers AES-128; our order puts AES-256 first.
    offer = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
    port = port_of(stack, port_name)
    assert negotiated_cipher(port, offer, starttls) == "ECDHE-ECDSA-AES256-GCM-SHA384"


def test_mx_refuses_anonymous_tls_but_still_serves_old_mtas(stack: RunningStack) -> None:
    """Port 25 is opportunistic: CBC stays for old MTAs (better than plaintext), but we always
    present a certificate, so anonymous suites are never needed."""
    port = int(stack.info["smtp_port"])
    assert negotiated_cipher(port, ANONYMOUS, "smtp") == ""
    assert negotiated_cipher(port, CBC, "smtp") != ""


# --- item: the auth-worker is not root ---------------------------------------------------------


def _processes_named(suffix: str) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:
            continue
        if cmdline.endswith(suffix.encode()):
            found.append(int(entry.name))
    return found


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid for {pid}")


def test_auth_worker_runs_unprivileged_and_alone_reads_the_unlock_token(
    stack: RunningStack,
) -> None:
    address, password = stack.new_mailbox()
    with stack.imap() as imap:  # a login: the worker unwraps the key via the keyhandler
        imap.login(address, password)
    instance = (stack.root / "etc" / "dovecot" / "dovecot.conf").read_text()
    name = instance.split("instance_name = ", 1)[1].split()[0]
    workers = [pid for pid in _processes_named(f"{name}/auth -w") if Path(f"/proc/{pid}").exists()]
    assert workers, "no auth-worker process of this stack"
    token = stack.root / "secrets" / "dovecot.key"
    st = token.stat()
    for pid in workers:
        uid = _uid(pid)
        assert uid != 0
        assert pwd.getpwuid(uid).pw_name == "ddmail-auth"
        assert uid == st.st_uid  # it owns the token ...
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0  # ... and nobody else may read it
    # Every other secret of the stack stays root's alone.
    for other in (stack.root / "secrets").iterdir():
        if other != token:
            assert other.stat().st_uid == 0
            assert stat.S_IMODE(other.stat().st_mode) & 0o077 == 0


# --- item: clients are told "localhost", and the hint runs as printed -------------------------


def test_certificate_names_localhost_and_verifies_for_it(stack: RunningStack) -> None:
    pem = (stack.root / "tls" / "server.pem").read_bytes()
    cert = x509.load_pem_x509_certificates(pem)[0]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert any(str(ip) == "127.0.0.1" for ip in sans.get_values_for_type(x509.IPAddress))
    context = ssl.create_default_context(cafile=stack.info["tls_ca"])  # verifies the name
    for port_name in ("imaps_port", "smtps_port", "web_port"):
        with (
            socket.create_connection(("localhost", port_of(stack, port_name)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_printed_hint_runs_as_printed(stack: RunningStack) -> None:
    printed = (stack.root / "stack-up.out").read_text()
    assert "IMAPS       localhost:" in printed
    assert f"Tor, I2P    {stack.info['onion_address']}, {stack.info['i2p_address']}" in printed
    assert f"IMAP localhost:{stack.info['anon_imap_port']}" in printed
    hint = next(line for line in printed.splitlines() if line.strip().startswith("try: "))
    argv = shlex.split(hint.strip().removeprefix("try: "))
    assert Path(argv[0]).is_absolute() and os.access(argv[0], os.X_OK), argv[0]
    address = f"hint{uuid.uuid4().hex[:8]}@{stack.info['global_domain']}"
    assert argv[-1].endswith("@" + stack.info["global_domain"])
    done = subprocess.run(
        [*argv[:-1], address], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"mailbox {address} created" in done.stdout
