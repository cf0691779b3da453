"""Outbound DANE and MTA-STS from the stack's own Postfix (issue 11), against other providers on
loopback: a DNSSEC-signed zone (signed by `dns zone --sign`'s code, served by NSD, validated by
the stack's Unbound from the unbound role's template) and the MTA-STS resolver from the
mta_sts_resolver role's template. A valid TLSA record gives a verified delivery, a wrong one a
deferral; an MTA-STS "enforce" destination whose certificate does not match defers, one whose
certificate matches is verified; a destination with neither still gets its mail
(opportunistic TLS, here none at all)."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from ddmail_admin.dnszone import Record
from ddmail_stack import config_file
from ddmail_stack.layout import DNS_ROUTED_SUFFIX, StackLayout
from tests.remote_world import (
    MailServer,
    PolicyHost,
    certificate,
    publish_signed,
    tlsa,
    wait_validated,
)
from tests.stackrun import RunningStack, wait_until

ZONE = DNS_ROUTED_SUFFIX
# One loopback address per remote host; port 25 and 443 as on the Internet.
HOSTS = {
    "dane-ok": "127.0.2.1",
    "dane-bad": "127.0.2.2",
    "plain": "127.0.2.3",
    "sts-ok": "127.0.2.4",
    "sts-bad": "127.0.2.5",
}
POLICY_HOST = "127.0.2.6"


@dataclass
class Remote:
    servers: dict[str, MailServer]


def mx(label: str) -> str:
    return f"mx.{label}.{ZONE}"


def policy(label: str) -> str:
    return f"version: STSv1\r\nmode: enforce\r\nmx: {mx(label)}\r\nmax_age: 86400\r\n"


@pytest.fixture(scope="module")
def remote(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    assert stack.dns is not None
    layout = StackLayout.load(stack.root)
    certs = tmp_path_factory.mktemp("remote-certs")
    tls = {label: certificate(layout, certs, mx(label)) for label in ("dane-ok", "sts-ok")}
    # Valid for another name: no TLSA or MTA-STS policy vouches for it.
    impostor = certificate(layout, certs, f"other.{ZONE}")
    tls["dane-bad"] = tls["sts-bad"] = impostor
    records: list[Record] = []
    for label, address in HOSTS.items():
        domain = f"{label}.{ZONE}."
        records += [
            Record(domain, "MX", f"10 {mx(label)}."),
            Record(f"{mx(label)}.", "A", address),
        ]
    records += [
        Record(f"_25._tcp.{mx('dane-ok')}.", "TLSA", tlsa(tls["dane-ok"][0])),
        # The record of a key the server does not have.
        Record(f"_25._tcp.{mx('dane-bad')}.", "TLSA", tlsa(tls["dane-ok"][0])),
    ]
    for label in ("sts-ok", "sts-bad"):
        records += [
            Record(f"_mta-sts.{label}.{ZONE}.", "TXT", '"v=STSv1; id=20261203"'),
            Record(f"mta-sts.{label}.{ZONE}.", "A", POLICY_HOST),
        ]
    records.append(Record(f"ns1.{ZONE}.", "A", "127.0.0.1"))
    cfg = config_file.load(layout)
    publish_signed(stack.dns, layout, cfg, ZONE, records, tmp_path_factory.mktemp("remote-keys"))
    servers = {label: MailServer(address, tls.get(label)) for label, address in HOSTS.items()}
    names = [f"mta-sts.{label}.{ZONE}" for label in ("sts-ok", "sts-bad")]
    policy_cert = certificate(layout, certs, *names)
    policies = PolicyHost(POLICY_HOST, *policy_cert, {n: policy(n.split(".")[1]) for n in names})
    try:
        wait_validated(layout, f"_25._tcp.{mx('dane-ok')}", "TLSA")
        yield Remote(servers)
    finally:
        policies.stop()
        for server in servers.values():
            server.stop()


def send(stack: RunningStack, to: str) -> str:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = address, to, f"Transport security {marker}"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=address.split("@")[1])
    msg.set_content(f"To another provider.\n{marker}\n")
    with stack.submit("465", address, password) as s:
        s.send_message(msg)
    return marker


def postfix_log(stack: RunningStack) -> str:
    return (stack.log_dir / "postfix.log").read_text(errors="replace")


def tls_verdict(stack: RunningStack, host: str) -> list[str]:
    """What Postfix's smtp client logged about its TLS sessions with HOST."""
    pattern = rf"(\w+) TLS connection established to {re.escape(host)}\["
    return re.findall(pattern, postfix_log(stack))


def deferred_reason(stack: RunningStack, recipient: str) -> str:
    def reason() -> str | None:
        for entry in stack.postqueue():
            if entry.get("queue_name") != "deferred":
                continue
            for rcpt in entry.get("recipients", []):
                if rcpt.get("address") == recipient:
                    return str(rcpt.get("delay_reason", ""))
        return None

    found: str = wait_until(reason, 60, f"{recipient} deferred")
    return found


def drop(stack: RunningStack, recipient: str) -> None:
    """Remove the test's deferred message, so it is not retried for the rest of the session."""
    for entry in stack.postqueue():
        if any(r.get("address") == recipient for r in entry.get("recipients", [])):
            subprocess.run(
                ["postsuper", "-c", str(stack.root / "etc" / "postfix"), "-d", entry["queue_id"]],
                check=True,
                capture_output=True,
            )


def test_a_destination_with_a_valid_tlsa_record_gets_a_verified_delivery(
    stack: RunningStack, remote: Remote
) -> None:
    marker = send(stack, f"reader@dane-ok.{ZONE}")
    wait_until(lambda: remote.servers["dane-ok"].received(marker), 60, "delivered over DANE")
    assert "Verified" in tls_verdict(stack, mx("dane-ok"))


@pytest.mark.parametrize(
    "label",
    [
        # A TLSA record for a key the server does not have.
        "dane-bad",
        # No TLSA record; an MTA-STS "enforce" policy naming an MX whose certificate names
        # another host.
        "sts-bad",
    ],
)
def test_a_destination_whose_certificate_nothing_vouches_for_is_deferred(
    stack: RunningStack, remote: Remote, label: str
) -> None:
    recipient = f"reader@{label}.{ZONE}"
    marker = send(stack, recipient)
    try:
        assert "Server certificate not verified" in deferred_reason(stack, recipient)
        assert not remote.servers[label].received(marker)
        assert "Verified" not in tls_verdict(stack, mx(label))
    finally:
        drop(stack, recipient)


def test_an_mta_sts_enforce_destination_with_its_own_certificate_is_verified(
    stack: RunningStack, remote: Remote
) -> None:
    """The policy was fetched (over HTTPS, through the resolver) and enforced: with no TLSA
    record, only MTA-STS makes Postfix verify the certificate."""
    marker = send(stack, f"reader@sts-ok.{ZONE}")
    wait_until(lambda: remote.servers["sts-ok"].received(marker), 60, "delivered under MTA-STS")
    assert "Verified" in tls_verdict(stack, mx("sts-ok"))


def test_a_destination_without_dane_or_mta_sts_still_gets_its_mail(
    stack: RunningStack, remote: Remote
) -> None:
    marker = send(stack, f"reader@plain.{ZONE}")
    wait_until(lambda: remote.servers["plain"].received(marker), 60, "delivered opportunistically")


def test_unbound_logs_no_names_and_no_addresses(stack: RunningStack, remote: Remote) -> None:
    """The names a provider resolves tell whom its users write to: never in a log."""
    log = Path(stack.log_dir / "unbound.log")
    text = log.read_text(errors="replace") if log.exists() else ""
    assert ZONE not in text
