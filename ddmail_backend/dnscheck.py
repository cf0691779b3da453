"""DNS checks for account domains, with an injectable resolver (an in-memory fake in tests)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.resolver

from ddmail_backend.dkim_names import SELECTORS, customer_cname
from ddmail_common.validators import operator_address

VERIFY_LABEL = "_ddmail-verify"
VERIFY_PREFIX = "ddmail-verify="


class Resolver(Protocol):
    def txt(self, name: str) -> list[str]:
        """Every TXT record at NAME (each one's strings joined); [] if none. Raises
        DnsUnavailable when DNS cannot answer right now."""

    def lookup(self, name: str, rtype: str) -> list[str]:
        """Every record of RTYPE at NAME in presentation form (TXT: strings joined)."""


class DnsUnavailable(Exception):
    pass


class DnsPythonResolver:
    def __init__(self, nameservers: Iterable[str] = (), port: int = 53, timeout: float = 5.0):
        servers = list(nameservers)
        self._resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            self._resolver.nameservers = servers
        self._resolver.port = port
        self._resolver.lifetime = timeout

    def txt(self, name: str) -> list[str]:
        return self.lookup(name, "TXT")

    def lookup(self, name: str, rtype: str) -> list[str]:
        try:
            answer = self._resolver.resolve(name, rtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DnsUnavailable(type(exc).__name__) from None
        if rtype == "TXT":
            return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]
        return [rdata.to_text() for rdata in answer]


class FakeResolver:
    """In-memory DNS for tests: `records[(name, 'TXT')] = [...]`."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.down = False
        self.slow: dict[tuple[str, str], float] = {}  # seconds a lookup takes (a slow server)

    def txt(self, name: str) -> list[str]:
        return self.lookup(name, "TXT")

    def lookup(self, name: str, rtype: str) -> list[str]:
        if self.down:
            raise DnsUnavailable("fake resolver down")
        time.sleep(self.slow.get((name.rstrip(".").lower(), rtype), 0.0))
        return list(self.records.get((name.rstrip(".").lower(), rtype), []))


def verification_name(domain: str) -> str:
    return f"{VERIFY_LABEL}.{domain}"


def verification_value(token: str) -> str:
    return f"{VERIFY_PREFIX}{token}"


def has_verification_token(resolver: Resolver, domain: str, token: str) -> bool:
    """True if ANY TXT record at the verification name carries this domain's token (other
    records may live there too)."""
    expected = verification_value(token)
    return any(record.strip() == expected for record in resolver.txt(verification_name(domain)))


@dataclass(frozen=True)
class Expected:
    """One DNS record an own domain needs, and whether DNS has it now."""

    rtype: str
    name: str
    value: str
    purpose: str

    def satisfied_by(self, found: list[str]) -> bool:
        # Policies are the owner's: any SPF that authorises our MX and any DMARC or TLS-RPT
        # record are accepted, not one exact text (stricter policies must remain possible).
        if self.purpose == "SPF":
            return any(f.startswith("v=spf1") and (" mx" in f or "include:" in f) for f in found)
        if self.purpose in ("DMARC", "TLS-RPT"):
            return any(f.startswith(self.value.split(";")[0]) for f in found)
        if self.purpose == "MTA-STS" and self.rtype == "TXT":
            # The policy at mta-sts.<domain> is ours, so the id must be ours: senders fetch the
            # policy again only when the id changes (RFC 8461 section 3.1).
            return any(_sts_fields(f) == _sts_fields(self.value) for f in found)
        return any(f.rstrip(".").lower() == self.value.rstrip(".").lower() for f in found)


def _sts_fields(record: str) -> dict[str, str]:
    """An MTA-STS TXT record's version and id (other fields are ignored, per the RFC)."""
    fields = dict(part.strip().partition("=")[::2] for part in record.split(";"))
    return {key: fields.get(key, "") for key in ("v", "id")}


def mta_sts_records(domain: str, policy_id: str, panel_host: str) -> list[Expected]:
    """MTA-STS for an own domain: the TXT record with the id of the policy the panel serves, and
    the policy host pointing at the panel (an A/AAAA record when the panel is only an address,
    as in the local stack)."""
    host = f"mta-sts.{domain}"
    try:
        address = ipaddress.ip_address(panel_host)
    except ValueError:
        target = Expected("CNAME", host, f"{panel_host}.", "MTA-STS")
    else:
        target = Expected("A" if address.version == 4 else "AAAA", host, panel_host, "MTA-STS")
    return [Expected("TXT", f"_mta-sts.{domain}", f"v=STSv1; id={policy_id}", "MTA-STS"), target]


def expected_records(
    domain: str,
    token: str,
    mail_host: str,
    global_domain: str,
    policy_id: str,
    panel_host: str,
) -> list[Expected]:
    return [
        Expected("TXT", verification_name(domain), verification_value(token), "ownership"),
        Expected("MX", domain, f"10 {mail_host}.", "MX"),
        Expected("TXT", domain, "v=spf1 mx -all", "SPF"),
        *(
            Expected("CNAME", name, f"{target}.", "DKIM")
            for name, target in (customer_cname(domain, sel, global_domain) for sel in SELECTORS)
        ),
        Expected("TXT", f"_dmarc.{domain}", "v=DMARC1; p=quarantine", "DMARC"),
        *mta_sts_records(domain, policy_id, panel_host),
        Expected(
            "TXT",
            f"_smtp._tls.{domain}",
            f"v=TLSRPTv1; rua=mailto:{operator_address('tlsrpt', global_domain)}",
            "TLS-RPT",
        ),
    ]
