"""The TLSA records `ddmail admin dns zone` prints match the key every TLS port of the stack
actually presents, computed by an independent implementation (the openssl command line) from
what each port sends in its handshake (issue 11)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_dkim_signing import admin
from tests.stackrun import RunningStack
from tests.zonefile import answers, parsed

pytestmark = pytest.mark.postgres


def presented_spki_sha256(port: int, starttls: str | None = None) -> str:
    """SHA-256 of the SubjectPublicKeyInfo of the certificate PORT presents, all by openssl."""
    connect = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
    if starttls:
        connect += ["-starttls", starttls]
    hello = subprocess.run(connect, input=b"", capture_output=True, timeout=30, check=False)
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", hello.stdout, re.S)
    assert pem, hello.stdout[-500:] + hello.stderr[-500:]
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"],
        input=pem.group(0),
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


def test_the_tlsa_record_matches_the_key_every_tls_port_presents(stack: RunningStack) -> None:
    zone = parsed(admin(stack, "dns", "zone"))
    (tlsa,) = answers(zone, "_25._tcp.mail.ddmail.test.", "TLSA")
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


def test_the_signed_zone_of_the_stack_passes_ldns_and_bind(
    stack: RunningStack, tmp_path: Path
) -> None:
    signed = admin(stack, "dns", "zone", "--sign")
    domain = stack.info["global_domain"]
    assert f"_25._tcp.mail.{domain}." in signed and "RRSIG" in signed
    path = tmp_path / "zone"
    path.write_text(signed)
    assert subprocess.run(["ldns-verify-zone", str(path)], capture_output=True).returncode == 0
    bind = subprocess.run(["dnssec-verify", "-o", domain, str(path)], capture_output=True)
    assert bind.returncode == 0, bind.stderr
