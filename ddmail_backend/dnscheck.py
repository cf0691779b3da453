"""DNS checks for account domains, with an injectable resolver (an in-memory fake in tests)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import dns.exception
import dns.resolver

VERIFY_LABEL = "_ddmail-verify"
VERIFY_PREFIX = "ddmail-verify="


class Resolver(Protocol):
    def txt(self, name: str) -> list[str]:
        """Every TXT record at NAME (each one's strings joined); [] if none. Raises
        DnsUnavailable when DNS cannot answer right now."""


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
        try:
            answer = self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DnsUnavailable(type(exc).__name__) from None
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]


class FakeResolver:
    """In-memory DNS for tests: `records[(name, 'TXT')] = [...]`."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.down = False

    def txt(self, name: str) -> list[str]:
        if self.down:
            raise DnsUnavailable("fake resolver down")
        return list(self.records.get((name.rstrip(".").lower(), "TXT"), []))


def verification_name(domain: str) -> str:
    return f"{VERIFY_LABEL}.{domain}"


def verification_value(token: str) -> str:
    return f"{VERIFY_PREFIX}{token}"


def has_verification_token(resolver: Resolver, domain: str, token: str) -> bool:
    """True if ANY TXT record at the verification name carries this domain's token (other
    records may live there too)."""
    expected = verification_value(token)
    return any(record.strip() == expected for record in resolver.txt(verification_name(domain)))
