"""A customer domain's MTA-STS policy served at its own policy host (issue 11): once the domain
is verified in DNS (NSD) and its owner points mta-sts.<domain> at the panel, the certificate job
(`ddmail admin mta-sts certificates`, with the stack's stand-in for certbot: its own CA) gives the
name a certificate, and the stack's nginx (the role's template) serves the policy over real TLS
under that name (SNI), naming the service's MX, with the id the domains page asks for."""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ddmail_common.config import load as load_config
from tests.integration.test_cli import ddmail
from tests.stackrun import TEST_ACCOUNT, RunningStack

pytestmark = pytest.mark.postgres
POLICY = "/.well-known/mta-sts.txt"


def get(stack: RunningStack, sni: str, host: str, path: str = POLICY) -> tuple[int, bytes]:
    """GET PATH from the stack's nginx over TLS to SNI (verified with the stack's CA), with the
    Host header HOST, as a sending MTA fetches a policy."""
    port = urlsplit(stack.info["web_url"]).port
    assert port is not None
    conn = http.client.HTTPSConnection(sni, port, context=stack.tls(), timeout=20)
    conn.sock = stack.tls().wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname=sni
    )
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def certificates(stack: RunningStack) -> list[str]:
    """The root-run job, as the deployment's timer runs it."""
    issue = f"{sys.executable} -m ddmail_stack.mta_sts {stack.root}"
    directory = Path(stack.root) / "tls" / "mta-sts"
    args = ["--dir", str(directory), "--issue", issue, "--root", str(stack.root)]
    result = ddmail(stack, "admin", "mta-sts", "certificates", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_customer_domains_policy_is_served_at_its_mta_sts_host_with_the_right_mx(
    stack: RunningStack,
) -> None:
    assert stack.dns is not None
    client = stack.client()
    domain = f"s{uuid.uuid4().hex[:8]}.example"
    host = f"mta-sts.{domain}"
    claim = client.call("POST", "/v1/domains", {"account": TEST_ACCOUNT, "name": domain})

    # Before the domain is verified: no certificate, and the panel says 404 for the name.
    assert host not in ddmail_hosts(stack)
    assert get(stack, "localhost", host)[0] == 404

    # The owner publishes what the domains page asks for, and verifies.
    rows = client.call("GET", f"/v1/domains/records?account={TEST_ACCOUNT}")["domains"][domain]
    sts = {r["type"]: r for r in rows if r["purpose"] == "MTA-STS"}
    assert set(sts) == {"TXT", "A"}  # the stack's panel is an address: an A record, not a CNAME
    assert (sts["TXT"]["name"], sts["A"]["name"], sts["A"]["value"]) == (
        f"_mta-sts.{domain}",
        host,
        "127.0.0.1",
    )
    zone = [
        f'_ddmail-verify IN TXT "ddmail-verify={claim["token"]}"',
        f'_mta-sts IN TXT "{sts["TXT"]["value"]}"',
        f"mta-sts IN A {sts['A']['value']}",
    ]
    stack.dns.publish(domain, "\n".join(zone))
    client.call("POST", "/v1/domains/verify", {"account": TEST_ACCOUNT, "name": domain})
    rows = client.call("GET", f"/v1/domains/records?account={TEST_ACCOUNT}")["domains"][domain]
    assert [(r["type"], r["ok"]) for r in rows if r["purpose"] == "MTA-STS"] == [
        ("TXT", True),
        ("A", True),
    ]

    assert host in ddmail_hosts(stack)
    assert f"issued {host}" in certificates(stack)
    assert certificates(stack) == []  # a second run has nothing to do

    status, body = get(stack, host, host)  # verified against the stack's CA, for this name
    assert status == 200
    cfg = load_config(Path(stack.info["config"]))
    lines = body.decode().split("\r\n")
    assert lines[:2] == ["version: STSv1", f"mode: {cfg.public.mta_sts_mode}"]
    assert [line[4:] for line in lines if line.startswith("mx: ")] == list(cfg.public.mta_sts_mx)
    assert list(cfg.public.mta_sts_mx) == ["mail.ddmail.test"]
    assert lines[-1] == "" and "\n" not in body.decode().replace("\r\n", "")
    # The id the domains page asked for (and DNS now serves) is the hash of what is served.
    assert sts["TXT"]["value"] == f"v=STSv1; id={hashlib.sha256(body).hexdigest()[:20]}"

    # Only the policy is served at that name.
    assert get(stack, host, host, "/settings")[0] == 404
    assert get(stack, host, host, "/")[0] == 404

    # The domain leaves: its certificate goes, and so does the policy.
    client.call("POST", "/v1/domains/remove", {"account": TEST_ACCOUNT, "name": domain})
    assert f"removed {host}" in certificates(stack)
    assert not (Path(stack.root) / "tls" / "mta-sts" / f"{host}.pem").exists()
    assert get(stack, "localhost", host)[0] == 404
    with pytest.raises(ssl.SSLError):  # no certificate for the name any more
        get(stack, host, host)


def ddmail_hosts(stack: RunningStack) -> list[str]:
    result = ddmail(stack, "admin", "mta-sts", "hosts", "--root", str(stack.root))
    assert result.returncode == 0, result.stderr
    return result.stdout.split()
