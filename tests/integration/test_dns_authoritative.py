"""The domain ownership check against a REAL authoritative DNS server (NSD) on loopback.

The unit tests use FakeResolver; these prove that DnsPythonResolver + has_verification_token
read real DNS answers correctly (several TXT records at one name, multi-string TXT, NXDOMAIN,
NoAnswer) and turn an unreachable server into DnsUnavailable. They do not use the `stack`
fixture: NSD is started here, on a free high port, with all its files in a tmp dir.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from ddmail_backend.dnscheck import DnsPythonResolver, DnsUnavailable, has_verification_token

pytestmark = pytest.mark.integration

ZONE = "example.test"
HOST = "127.0.0.1"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@dataclass(frozen=True)
class AuthServer:
    port: int
    token: str  # published as the only ddmail-verify record at _ddmail-verify.example.test
    split_token: str  # published as "ddmail-verify=" "<token>" at _ddmail-verify.split...


def _free_port() -> int:
    """A port free for both UDP and TCP on loopback (NSD serves both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free loopback port")


def _zone_text(token: str, split_token: str) -> str:
    return f"""$ORIGIN {ZONE}.
$TTL 60
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A {HOST}
@ IN A 192.0.2.10
www IN A 192.0.2.11
_ddmail-verify IN TXT "google-site-verification=abc"
_ddmail-verify IN TXT "ddmail-verify={token}"
_ddmail-verify IN TXT "v=spf1 -all"
_ddmail-verify.split IN TXT "ddmail-verify=" "{split_token}"
_ddmail-verify.noanswer IN A 192.0.2.12
"""


def _nsd_conf(tmp: Path, port: int) -> str:
    return f"""server:
  ip-address: {HOST}@{port}
  port: {port}
  do-ip4: yes
  do-ip6: no
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{tmp}"
  database: ""
  zonelistfile: "{tmp}/zone.list"
  xfrdfile: "{tmp}/xfrd.state"
  xfrdir: "{tmp}"
  pidfile: "{tmp}/nsd.pid"
  logfile: "{tmp}/nsd.log"
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "{ZONE}"
  zonefile: "{tmp}/{ZONE}.zone"
"""


def _answers_soa(port: int) -> bool:
    query = dns.message.make_query(ZONE, "SOA")
    try:
        response = dns.query.udp(query, HOST, port=port, timeout=0.2)
    except (dns.exception.DNSException, OSError):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    nsd = shutil.which("nsd", path=SEARCH_PATH)
    if nsd is None:
        pytest.skip("nsd binary not found: install the Debian package 'nsd'")
    tmp = tmp_path_factory.mktemp("nsd")
    token, split_token = secrets.token_hex(16), secrets.token_hex(16)
    port = _free_port()
    (tmp / f"{ZONE}.zone").write_text(_zone_text(token, split_token))
    conf = tmp / "nsd.conf"
    conf.write_text(_nsd_conf(tmp, port))
    proc = subprocess.Popen(
        [nsd, "-d", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 5.0
        while not _answers_soa(port):
            log = tmp / "nsd.log"
            if proc.poll() is not None or time.monotonic() > deadline:
                detail = log.read_text() if log.exists() else "(no log)"
                pytest.fail(f"nsd did not come up on {HOST}:{port} (rc={proc.poll()}): {detail}")
            time.sleep(0.05)
        yield AuthServer(port=port, token=token, split_token=split_token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    closed_port = _free_port()  # nothing listens there once the probe sockets are closed
    resolver = DnsPythonResolver([HOST], port=closed_port, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(DnsUnavailable):
        has_verification_token(resolver, ZONE, "anything")
    assert time.monotonic() - started < 3.0  # the timeout is applied, not dnspython's default
