"""`ddmail admin dns zone`: what an operator pastes into a zone is valid zone-file syntax and
says what the running configuration does (MX host, ports, SPF, DMARC reports to dmarc@)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dns.rdatatype
import dns.zone

from ddmail_admin.dnszone import render, txt
from ddmail_common.config import Argon2Settings, Config, PublicSettings


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


def parsed(text: str) -> dns.zone.Zone:
    """As a name server would load it: under the root, every name absolute."""
    head = ". 3600 IN SOA ns. host. 1 7200 3600 1209600 3600\n"
    return dns.zone.from_text(head + text, origin=".", relativize=False, check_origin=False)


def answers(zone: dns.zone.Zone, name: str, rtype: str) -> list[str]:
    rdataset = zone.get_rdataset(name, dns.rdatatype.from_text(rtype))
    return sorted(r.to_text() for r in rdataset) if rdataset else []


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
    (rdata,) = zone.get_rdataset("t.example.org.", dns.rdatatype.TXT)  # type: ignore[misc]
    assert [len(s) for s in rdata.strings] == [255, 255, 99]
    assert b"".join(rdata.strings).decode() == value
