"""`ddmail admin dns zone`: what an operator pastes into a zone is valid zone-file syntax and
says what the running configuration does (MX host, ports, SPF, DMARC reports to dmarc@)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ddmail_admin.dnszone import render, txt
from ddmail_common.config import Argon2Settings, Config, PublicSettings, TlsSettings
from ddmail_common.mta_sts import policy_id
from tests.zonefile import answers, parsed, txt_bytes


def config() -> Config:
    return Config(
        db_url="sqlite:///x",
        backend_socket=Path("/run/b.sock"),
        keyhandler_socket=Path("/run/k.sock"),
        unlock_listen=("127.0.0.1", 10080),
        secret_files={},
        argon2=Argon2Settings(),
        mail_root=Path("/var/lib/ddmail/mail"),
        mail_hostname="mx.example.net",
        public=PublicSettings(
            mail_hostname="mail.example.net", submission_port=587, submissions_port=465
        ),
    )


def test_every_global_domain_gets_mx_spf_dmarc_and_service_records() -> None:
    zone = parsed(render(config(), ["Example.org", "example.com."]))
    for domain in ("example.org.", "example.com."):
        assert answers(zone, domain, "MX") == ["10 mx.example.net."]
        assert answers(zone, domain, "TXT") == ['"v=spf1 mx -all"']
        dmarc = answers(zone, f"_dmarc.{domain}", "TXT")
        assert dmarc == [f'"v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain.rstrip(".")}"']
        assert answers(zone, f"_submissions._tcp.{domain}", "SRV") == ["0 1 465 mail.example.net."]
        assert answers(zone, f"_submission._tcp.{domain}", "SRV") == ["0 1 587 mail.example.net."]
        assert answers(zone, f"_imaps._tcp.{domain}", "SRV") == ["0 1 993 mail.example.net."]
        assert answers(zone, f"_pop3._tcp.{domain}", "SRV") == ["0 0 0 ."]


def test_the_ports_published_are_the_configured_ones() -> None:
    cfg = config()
    cfg = dataclasses.replace(cfg, public=dataclasses.replace(cfg.public, imaps_port=10993))
    zone = parsed(render(cfg, ["example.org"]))
    assert answers(zone, "_imaps._tcp.example.org.", "SRV") == ["0 1 10993 mail.example.net."]


def test_long_txt_values_are_split_into_strings_of_255_octets() -> None:
    value = "k=rsa; p=" + "A" * 600
    zone = parsed(f"t.example.org. 3600 IN TXT {txt(value)}\n")
    assert answers(zone, "t.example.org.", "TXT")[0].count('" "') == 2  # three strings
    assert txt_bytes(zone, "t.example.org.") == value.encode()


def dkim_key(domain: str, selector: str, state: str, record: str) -> dict[str, object]:
    return {
        "domain": domain,
        "selector": selector,
        "state": state,
        "record": record,
        "value": "v=DKIM1; k=rsa; h=sha256; p=" + selector.upper() * 100,
    }


def test_dkim_keys_of_global_and_customer_domains_are_published_with_the_configured_ttl() -> None:
    keys = [
        dkim_key("example.org", "ddm1", "active", "ddm1._domainkey.example.org"),
        dkim_key("example.org", "ddm2", "published", "ddm2._domainkey.example.org"),
        dkim_key("customer.test", "ddm2", "retiring", "ddm2.customer.test.dkim.example.org"),
    ]
    text = render(dataclasses.replace(config(), dns_ttl=600), ["example.org"], keys)
    assert "$TTL 600" in text
    zone = parsed(text)
    for key in keys:
        assert txt_bytes(zone, f"{key['record']}.") == str(key["value"]).encode()
    # Customer keys come after the global domains, under their own heading.
    assert text.index("; --- DKIM keys of customer domains") < text.index("customer.test.dkim")


def test_mta_sts_tls_rpt_and_caa_follow_the_config() -> None:
    cfg = dataclasses.replace(
        config(),
        web=dataclasses.replace(config().web, panel_url="https://panel.example.net"),
        public=dataclasses.replace(config().public, caa_issuers=("letsencrypt.org", "pki.goog")),
    )
    zone = parsed(render(cfg, ["example.org"]))
    (sts,) = answers(zone, "_mta-sts.example.org.", "TXT")
    assert sts == f'"v=STSv1; id={policy_id(cfg.public)}"'
    assert answers(zone, "mta-sts.example.org.", "CNAME") == ["panel.example.net."]
    assert answers(zone, "_smtp._tls.example.org.", "TXT") == [
        '"v=TLSRPTv1; rua=mailto:tlsrpt@example.org"'
    ]
    assert answers(zone, "example.org.", "CAA") == [
        '0 issue "letsencrypt.org"',
        '0 issue "pki.goog"',
    ]
    # The id changes exactly when the policy the panel serves changes.
    testing = dataclasses.replace(cfg.public, mta_sts_mode="testing")
    assert policy_id(testing) != policy_id(cfg.public)
    assert policy_id(dataclasses.replace(cfg.public)) == policy_id(cfg.public)


def test_tlsa_records_name_every_tls_port_with_the_certificates_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.net")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cfg = dataclasses.replace(
        config(),
        tls=TlsSettings(certificate=pem),
        web=dataclasses.replace(config().web, panel_url="https://panel.example.net"),
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    want = [f"3 1 1 {hashlib.sha256(spki).hexdigest()}"]
    zone = parsed(render(cfg, ["example.org"]))
    for name_ in (
        "_25._tcp.mx.example.net.",
        "_465._tcp.mail.example.net.",
        "_587._tcp.mail.example.net.",
        "_993._tcp.mail.example.net.",
        "_443._tcp.panel.example.net.",
    ):
        assert answers(zone, name_, "TLSA") == want, name_
    # No certificate configured: no TLSA record at all (never a guessed one).
    assert "TLSA" not in render(config(), ["example.org"])
