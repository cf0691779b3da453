"""A local CA and the certificates it signs, so the stack speaks real TLS like production: the
server certificate, the next one of a TLS key rollover (`ddmail stack issue-certificate`), and
the certificates of the test suite's remote mail and policy servers."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ddmail_common.files import create_new


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(ca_cert: Path, ca_key: Path) -> None:
    now = _now()
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("DDMail local stack CA"))
        .issuer_name(_name("DDMail local stack CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    ca_cert.parent.mkdir(parents=True, exist_ok=True)
    ca_key.unlink(missing_ok=True)
    create_new(ca_key, _key_pem(key), 0o600)
    ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))


def issue(
    ca_cert: Path,
    ca_key: Path,
    server_cert: Path,
    server_key: Path,
    hostnames: Sequence[str],
    addresses: Sequence[str] = ("127.0.0.1", "::1"),
) -> None:
    """A new key (SERVER_KEY, 0600, created: never over an existing file) and its certificate
    for HOSTNAMES and ADDRESSES, signed by the CA; the certificate file holds the chain."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    now = _now()
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    # Clients are told to use "localhost" (some ignore IP SANs); the addresses are named too.
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    create_new(server_key, _key_pem(key), 0o600)
    server_cert.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )


def make_local_tls(
    ca_cert: Path, ca_key: Path, server_cert: Path, server_key: Path, hostnames: list[str]
) -> None:
    """Create the CA and server certificate unless they exist."""
    if all(p.exists() for p in (ca_cert, ca_key, server_cert, server_key)):
        return
    make_ca(ca_cert, ca_key)
    server_key.unlink(missing_ok=True)
    issue(ca_cert, ca_key, server_cert, server_key, hostnames)
