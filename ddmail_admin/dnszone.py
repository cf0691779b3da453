"""`ddmail admin dns zone`: every DNS record the global domains and the mail host need, in
zone-file syntax, computed from the one validated config and the backend's domain list.

Each concern is one function that yields records for a domain (mail routing, sender policy,
client discovery) from the config; the DKIM keys' TXT records come from the backend's key list
(their names: ddmail_backend.dkim_names). Later concerns (TLSA, MTA-STS, TLS-RPT, DNSSEC
signing) are added to RECORD_SOURCES or wrap `render`, without touching the others."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ddmail_admin.tls_files import published_certificates
from ddmail_common.config import Config
from ddmail_common.mta_sts import policy_id
from ddmail_common.validators import operator_address


@dataclass(frozen=True)
class Record:
    name: str  # absolute, with the trailing dot
    rtype: str
    data: str
    comment: str = ""

    def line(self) -> str:
        text = f"{self.name:<40} IN {self.rtype:<5} {self.data}"
        return f"{text} ; {self.comment}" if self.comment else text


def fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def txt(value: str) -> str:
    """A TXT value as zone-file strings of at most 255 octets each (RFC 1035)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    chunks = [escaped[i : i + 255] for i in range(0, len(escaped), 255)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def mail_routing(cfg: Config, domain: str) -> Iterator[Record]:
    yield Record(fqdn(domain), "MX", f"10 {fqdn(cfg.mail_hostname)}", "mail for the domain")


def sender_policy(cfg: Config, domain: str) -> Iterator[Record]:
    """SPF: only the MX host sends for the domain. DMARC: receivers quarantine what fails;
    aggregate reports go to dmarc@ (reserved, delivered to the operator)."""
    yield Record(fqdn(domain), "TXT", txt("v=spf1 mx -all"), "SPF")
    dmarc = f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}"
    yield Record(fqdn(f"_dmarc.{domain}"), "TXT", txt(dmarc), "DMARC")


def client_discovery(cfg: Config, domain: str) -> Iterator[Record]:
    """RFC 6186/8314 service records: submission and IMAP over TLS; "." for what is not
    offered (plain IMAP, POP3), so clients do not try it."""
    host = fqdn(cfg.public.mail_hostname)
    offered = (
        ("_submissions._tcp", cfg.public.submissions_port),
        ("_submission._tcp", cfg.public.submission_port),
        ("_imaps._tcp", cfg.public.imaps_port),
    )
    for service, port in offered:
        yield Record(fqdn(f"{service}.{domain}"), "SRV", f"0 1 {port} {host}")
    for service in ("_imap._tcp", "_pop3._tcp", "_pop3s._tcp"):
        yield Record(fqdn(f"{service}.{domain}"), "SRV", "0 0 0 .", "not offered")


def transport_policy(cfg: Config, domain: str) -> Iterator[Record]:
    """MTA-STS (RFC 8461: the id changes exactly when the served policy does; the panel serves
    the policy at mta-sts.<domain>), TLS-RPT (RFC 8460: reports to tlsrpt@, reserved) and CAA
    (only the configured certificate authorities may issue)."""
    yield Record(
        fqdn(f"_mta-sts.{domain}"), "TXT", txt(f"v=STSv1; id={policy_id(cfg.public)}"), "MTA-STS"
    )
    panel = panel_host(cfg)
    if is_host_name(panel):
        yield Record(fqdn(f"mta-sts.{domain}"), "CNAME", fqdn(panel), "serves the policy")
    report = f"v=TLSRPTv1; rua=mailto:{operator_address('tlsrpt', domain)}"
    yield Record(fqdn(f"_smtp._tls.{domain}"), "TXT", txt(report), "TLS-RPT")
    for issuer in cfg.public.caa_issuers:
        yield Record(fqdn(domain), "CAA", f'0 issue "{issuer}"', "who may issue certificates")


def tlsa_3_1_1(certificate_pem: bytes) -> str:
    """DANE-EE, SubjectPublicKeyInfo, SHA-256 (RFC 7671): follows the key, not the
    certificate, so a renewal that keeps the key keeps the record."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


def tls_ports(cfg: Config) -> list[tuple[str, int]]:
    """(host, port) of every TLS service: the MX's port 25 (the stack's own), the host mail
    programs use for 465/587/993, the panel's 443. Names that are no DNS names are left out."""
    ports = [(cfg.mail_hostname, cfg.public.smtp_port)]
    ports += [
        (cfg.public.mail_hostname, port)
        for port in (cfg.public.submissions_port, cfg.public.submission_port, cfg.public.imaps_port)
    ]
    ports.append((panel_host(cfg), 443))
    return [(host, port) for host, port in ports if is_host_name(host)]


def tlsa_name(host: str, port: int) -> str:
    return fqdn(f"_{port}._tcp.{host}")


def transport_security(cfg: Config) -> Iterator[Record]:
    """TLSA records of every TLS port for the certificate they all serve ([tls] certificate)
    and, during a key rollover, for the next or the previous key too (DN 40)."""
    for role, path in published_certificates(cfg.tls):
        data = tlsa_3_1_1(path.read_bytes())
        comment = "DANE" if role == "current" else f"DANE, {role} key (rollover)"
        for host, port in tls_ports(cfg):
            yield Record(tlsa_name(host, port), "TLSA", data, comment)


def panel_host(cfg: Config) -> str:
    return urlsplit(cfg.web.panel_url).hostname or ""


def host_addresses(cfg: Config) -> Iterator[Record]:
    """A/AAAA of the server's host names ([zone] addresses): the MX, the mail programs' host,
    the panel."""
    hosts = dict.fromkeys([cfg.mail_hostname, cfg.public.mail_hostname, panel_host(cfg)])
    for host in hosts:
        if not is_host_name(host):
            continue
        for address in cfg.zone.addresses:
            rtype = "AAAA" if ":" in address else "A"
            yield Record(fqdn(host), rtype, address, "this server")


def is_host_name(name: str) -> bool:
    """A DNS name records can point at (not an address, not a single label like localhost)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return "." in name
    return False


RecordSource = Callable[[Config, str], Iterable[Record]]
RECORD_SOURCES: tuple[RecordSource, ...] = (
    mail_routing,
    sender_policy,
    client_discovery,
    transport_policy,
)


def records(cfg: Config, domains: Iterable[str]) -> list[Record]:
    return [
        record for domain in domains for source in RECORD_SOURCES for record in source(cfg, domain)
    ]


DkimKey = Mapping[str, Any]  # one entry of the backend's GET /v1/dkim


def dkim_selectors(keys: Iterable[DkimKey]) -> Iterator[Record]:
    """Every key that is published, signing, or in its grace period: the next and the old key
    stay in DNS around a switch, so mail signed with either verifies."""
    for key in keys:
        comment = f"DKIM {key['domain']} {key['selector']} ({key['state']})"
        yield Record(fqdn(key["record"]), "TXT", txt(key["value"]), comment)


def global_names(domains: Iterable[str]) -> list[str]:
    return sorted({d.lower().rstrip(".") for d in domains})


def sections(
    cfg: Config, names: list[str], dkim_keys: Sequence[DkimKey]
) -> list[tuple[str, list[Record]]]:
    """Every record, grouped under a heading: the hosts' keys, each global domain, the DKIM
    keys of customer domains (which live in the primary global domain's zone)."""
    out = [
        (
            "the hosts: addresses and TLS keys (DANE)",
            [*host_addresses(cfg), *transport_security(cfg)],
        )
    ]
    for domain in names:
        own = dkim_selectors(k for k in dkim_keys if k["domain"] == domain)
        out.append((domain, [*records(cfg, [domain]), *own]))
    customers = [k for k in dkim_keys if k["domain"] not in names]
    out.append(
        (
            "DKIM keys of customer domains (their CNAMEs point here, under "
            f"{cfg.web.global_domain})",
            list(dkim_selectors(customers)),
        )
    )
    return [(title, found) for title, found in out if found]


def header(cfg: Config, names: list[str]) -> list[str]:
    lines = [f"; DDMail: the records of the global domains {', '.join(names) or '(none)'}"]
    if not cfg.zone.addresses:
        lines += [
            f"; Also needed, not known here: {fqdn(cfg.mail_hostname)} A/AAAA (this server's",
            ";   addresses: [zone] addresses prints them) and a PTR record for each naming it.",
        ]
    else:
        lines.append(
            f"; Also needed: a PTR record for each address naming {fqdn(cfg.mail_hostname)}"
        )
    return lines


def render(cfg: Config, domains: Iterable[str], dkim_keys: Sequence[DkimKey] = ()) -> str:
    names = global_names(domains)
    lines = [*header(cfg, names), f"$TTL {cfg.dns_ttl}"]
    for title, found in sections(cfg, names, dkim_keys):
        lines.append(f"; --- {title}")
        lines.extend(record.line() for record in found)
    return "\n".join(lines) + "\n"
