"""The domain ownership check against a REAL authoritative DNS server (NSD) on loopback.

The unit tests use FakeResolver; these prove that DnsPythonResolver + has_verification_token
read real DNS answers correctly (several TXT records at one name, multi-string TXT, NXDOMAIN,
NoAnswer) and turn an unreachable server into DnsUnavailable. They do not use the `stack`
fixture: NSD is started here, on a free high port, with all its files in a tmp dir.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ddmail_backend.dnscheck import DnsPythonResolver, DnsUnavailable, has_verification_token
from tests.authdns import HOST, AuthDns, free_port

pytestmark = pytest.mark.integration

ZONE = "example.test"


@dataclass(frozen=True)
class AuthServer:
    port: int
    token: str  # published as the only ddmail-verify record at _ddmail-verify.example.test
    split_token: str  # published as "ddmail-verify=" "<token>" at _ddmail-verify.split...


def _records(token: str, split_token: str) -> str:
    return f"""@ IN A 192.0.2.10
www IN A 192.0.2.11
_ddmail-verify IN TXT "google-site-verification=abc"
_ddmail-verify IN TXT "ddmail-verify={token}"
_ddmail-verify IN TXT "v=spf1 -all"
_ddmail-verify.split IN TXT "ddmail-verify=" "{split_token}"
_ddmail-verify.noanswer IN A 192.0.2.12
"""


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    server = AuthDns(tmp_path_factory.mktemp("nsd"))
    token, split_token = secrets.token_hex(16), secrets.token_hex(16)
    try:
        server.publish(ZONE, _records(token, split_token))
        yield AuthServer(port=server.port, token=token, split_token=split_token)
    finally:
        server.stop()


def _resolver(server: AuthServer) -> DnsPythonResolver:
    return DnsPythonResolver([HOST], port=server.port, timeout=2.0)


def test_right_token_found_among_several_txt_records(auth_server: AuthServer) -> None:
    resolver = _resolver(auth_server)
    records = resolver.txt(f"_ddmail-verify.{ZONE}")
    assert len(records) == 3  # the token is not alone at that name
    assert has_verification_token(resolver, ZONE, auth_server.token) is True


def test_wrong_token_is_rejected(auth_server: AuthServer) -> None:
    resolver = _resolver(auth_server)
    assert has_verification_token(resolver, ZONE, secrets.token_hex(16)) is False
    # A token published for another name does not verify this one.
    assert has_verification_token(resolver, ZONE, auth_server.split_token) is False


@pytest.mark.parametrize(
    "domain",
    [
        pytest.param(f"www.{ZONE}", id="nxdomain"),
        pytest.param(f"missing.{ZONE}", id="nxdomain-no-such-host"),
        pytest.param(f"noanswer.{ZONE}", id="noanswer"),
    ],
)
def test_domain_without_record_is_not_verified(auth_server: AuthServer, domain: str) -> None:
    resolver = _resolver(auth_server)
    assert resolver.txt(f"_ddmail-verify.{domain}") == []
    assert has_verification_token(resolver, domain, auth_server.token) is False


def test_multi_string_txt_is_joined_before_comparing(auth_server: AuthServer) -> None:
    resolver = _resolver(auth_server)
    domain = f"split.{ZONE}"
    assert resolver.txt(f"_ddmail-verify.{domain}") == [f"ddmail-verify={auth_server.split_token}"]
    assert has_verification_token(resolver, domain, auth_server.split_token) is True


def test_unreachable_dns_raises_dns_unavailable_within_timeout() -> None:
    closed_port = free_port()  # nothing listens there once the probe sockets are closed
    resolver = DnsPythonResolver([HOST], port=closed_port, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(DnsUnavailable):
        has_verification_token(resolver, ZONE, "anything")
    assert time.monotonic() - started < 3.0  # the timeout is applied, not dnspython's default
