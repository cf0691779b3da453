"""Transport security of the stack's TLS ports (issue 11): the TLSA records `ddmail admin dns
zone` prints match the key every port actually presents (computed by the openssl command line
from each handshake), the signed zone passes two validators, and every port keeps the one TLS
policy (role tls_policy): TLS 1.2/1.3 only, the server's choice of forward-secret AEAD suites,
no anonymous suite; port 25 alone also takes older suites (opportunistic)."""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from tests.integration.test_dkim_signing import admin
from tests.stackrun import SENDER_HELO, RunningStack
from tests.zonefile import answers, parsed

pytestmark = [
    pytest.mark.postgres,
    # Offering TLS 1.1 is the point of two tests here.
    pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning"),
]


def presented_certificate(port: int, starttls: str | None = None) -> bytes:
    """The certificate PORT presents (PEM), as openssl s_client receives it."""
    connect = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
    if starttls:
        connect += ["-starttls", starttls]
    hello = subprocess.run(connect, input=b"", capture_output=True, timeout=30, check=False)
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", hello.stdout, re.S)
    assert pem, hello.stdout[-500:] + hello.stderr[-500:]
    return pem.group(0)


def presented_spki_sha256(port: int, starttls: str | None = None) -> str:
    """SHA-256 of the SubjectPublicKeyInfo of the certificate PORT presents, all by openssl."""
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"],
        input=presented_certificate(port, starttls),
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pubkey,
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-r"], input=der, capture_output=True, check=True
    ).stdout
    return digest.split()[0].decode()


def danetool_tlsa(certificate: bytes, port: int, directory: Path) -> str:
    """GnuTLS's independent 3 1 1 record for CERTIFICATE (without network: danetool may look
    names up)."""
    pem = directory / f"presented-{port}.pem"
    pem.write_bytes(certificate)
    made = subprocess.run(
        ["unshare", "--net", "danetool", "--tlsa-rr", "--host", "mail.ddmail.test",
         "--port", str(port), "--load-certificate", str(pem)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"IN TLSA \( ?03 01 01 ([0-9a-f]+) ?\)", made.stdout)
    assert found, made.stdout
    return found.group(1)


def test_the_tlsa_record_matches_the_key_every_tls_port_presents(
    stack: RunningStack, tmp_path: Path
) -> None:
    """The MX's record carries the stack's own port 25 ([public] smtp_port): a sender asks
    for _<port>._tcp.<MX>."""
    zone = parsed(admin(stack, "dns", "zone"))
    smtp = stack.info["smtp_port"]
    (tlsa,) = answers(zone, f"_{smtp}._tcp.mail.ddmail.test.", "TLSA")
    usage, selector, matching, digest = tlsa.split()
    assert (usage, selector, matching) == ("3", "1", "1")
    info = stack.info
    for port, starttls in (
        (info["smtp_port"], "smtp"),
        (info["submission_port"], "smtp"),
        (info["smtps_port"], None),
        (info["imaps_port"], None),
        (int(info["web_url"].rsplit(":", 1)[1]), None),
    ):
        assert presented_spki_sha256(port, starttls) == digest.lower(), port
    # GnuTLS agrees with openssl on what port 25 presents.
    assert danetool_tlsa(presented_certificate(smtp, "smtp"), smtp, tmp_path) == digest.lower()


def test_the_signed_zone_of_the_stack_passes_ldns_and_bind(
    stack: RunningStack, tmp_path: Path
) -> None:
    domain = stack.info["global_domain"]
    signed = admin(stack, "dns", "zone", "--sign", "--domain", domain)
    assert f"_{stack.info['smtp_port']}._tcp.mail.{domain}." in signed and "RRSIG" in signed
    path = tmp_path / "zone"
    path.write_text(signed)
    assert subprocess.run(["ldns-verify-zone", str(path)], capture_output=True).returncode == 0
    bind = subprocess.run(["dnssec-verify", "-o", domain, str(path)], capture_output=True)
    assert bind.returncode == 0, bind.stderr


# What each TLS port speaks first: SMTP with STARTTLS (25, 587) or TLS at once (465, 993, 443).
STARTTLS_PORTS = ("smtp_port", "submission_port")
IMPLICIT_PORTS = ("smtps_port", "imaps_port", "web_port")


def handshake(stack: RunningStack, port_name: str, context: ssl.SSLContext) -> tuple[str, str]:
    """(TLS version, cipher suite) a client offering CONTEXT gets; ssl.SSLError if none."""
    port = (
        int(stack.info["web_url"].rsplit(":", 1)[1])
        if port_name == "web_port"
        else stack.info[port_name]
    )
    if port_name in STARTTLS_PORTS:
        with smtplib.SMTP("127.0.0.1", port, timeout=30, local_hostname=SENDER_HELO) as smtp:
            smtp.starttls(context=context)
            tls = smtp.sock
            assert isinstance(tls, ssl.SSLSocket)
            return str(tls.version()), tls.cipher()[0]  # type: ignore[index]
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(tls.version()), tls.cipher()[0]  # type: ignore[index]


def client(version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the policy is under test here, not the certificate
    context.minimum_version = context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    return context


@pytest.mark.parametrize("port_name", STARTTLS_PORTS + IMPLICIT_PORTS)
def test_every_port_speaks_tls_1_2_and_1_3_with_forward_secrecy(
    stack: RunningStack, port_name: str
) -> None:
    assert handshake(stack, port_name, client(ssl.TLSVersion.TLSv1_3))[0] == "TLSv1.3"
    # A client that prefers an old suite gets the server's choice: ECDHE with AEAD.
    old_first = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
    version, cipher = handshake(stack, port_name, client(ssl.TLSVersion.TLSv1_2, old_first))
    assert version == "TLSv1.2" and cipher.startswith("ECDHE") and "GCM" in cipher, cipher


@pytest.mark.parametrize("port_name", STARTTLS_PORTS + IMPLICIT_PORTS)
def test_no_port_speaks_tls_1_1_or_an_anonymous_suite(stack: RunningStack, port_name: str) -> None:
    with pytest.raises((ssl.SSLError, smtplib.SMTPException, ConnectionError)):
        handshake(stack, port_name, client(ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0"))
    with pytest.raises((ssl.SSLError, smtplib.SMTPException, ConnectionError)):
        handshake(stack, port_name, client(ssl.TLSVersion.TLSv1_2, "aNULL:@SECLEVEL=0"))


@pytest.mark.parametrize("port_name", ("submission_port", *IMPLICIT_PORTS))
def test_ports_that_require_tls_refuse_cbc_suites(stack: RunningStack, port_name: str) -> None:
    """Port 25 alone also accepts older suites (opportunistic: better than clear text)."""
    cbc_only = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
    with pytest.raises((ssl.SSLError, smtplib.SMTPException, ConnectionError)):
        handshake(stack, port_name, client(ssl.TLSVersion.TLSv1_2, cbc_only))
    assert handshake(stack, "smtp_port", client(ssl.TLSVersion.TLSv1_2, cbc_only))[0] == "TLSv1.2"


def test_the_tls_1_1_client_above_really_speaks_tls_1_1(stack: RunningStack) -> None:
    """The control for the refusals: a server that allows TLS 1.1 gets it from that client, so
    the stack's ports refused it themselves."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(stack.root / "tls" / "server.pem", stack.root / "tls" / "server.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        threading.Thread(target=serve, daemon=True).start()
        context = client(ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            assert tls.version() == "TLSv1.1"
