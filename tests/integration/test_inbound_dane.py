"""Inbound DANE end to end (issue 11): the zone `ddmail admin dns zone --sign` prints is served
by NSD and validated by Unbound; another provider's Postfix (smtp_tls_security_level = dane)
delivers to the stack's port 25 only over a verified TLS connection; an impostor certificate
gets the mail deferred (and delivered once the real one is back); through a whole key
rollover, prepare -> switch -> finish, every delivery stays verified."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from ddmail_admin.dnszone import tlsa_3_1_1
from ddmail_stack.dns import add_trust_anchor, remove_trust_anchor
from ddmail_stack.layout import GLOBAL_DOMAIN, StackLayout
from tests.integration.test_cli import ddmail
from tests.integration.test_dkim_signing import admin
from tests.integration.test_transport_security import presented_spki_sha256
from tests.remote_world import SendingPostfix, certificate
from tests.stackrun import RunningStack, wait_until

MX = f"mail.{GLOBAL_DOMAIN}"


def publish_own_zone(stack: RunningStack) -> str:
    """What an operator who hosts the zone does: sign it (as the daily timer does), serve the
    file, DS at the registrar."""
    assert stack.dns is not None
    wrote = admin(stack, "dns", "zone", "--sign", "--write", "--domain", GLOBAL_DOMAIN)
    (path,) = re.findall(r"^wrote (\S+)$", wrote, re.M)
    signed = Path(path).read_text()
    ds = re.search(r"^; DS record for the registrar: \S+ IN DS (.+)$", signed, re.M)
    assert ds, signed[:500]
    stack.dns.publish_zone_file(GLOBAL_DOMAIN, signed)
    add_trust_anchor(StackLayout.load(stack.root), GLOBAL_DOMAIN, ds.group(1))
    return signed


@pytest.fixture(scope="module")
def sender(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SendingPostfix]:
    layout = StackLayout.load(stack.root)
    publish_own_zone(stack)
    # The MX listens on the stack's own port 25; the TLSA record names that port.
    route = {GLOBAL_DOMAIN: f"{GLOBAL_DOMAIN}:{stack.info['smtp_port']}"}
    home = Path(tempfile.mkdtemp(prefix="ddm-sender-", dir="/tmp"))
    home.chmod(0o711)
    sending = SendingPostfix(home, layout, route)
    try:
        yield sending
    finally:
        sending.stop()
        remove_trust_anchor(layout, GLOBAL_DOMAIN)
        shutil.rmtree(home, ignore_errors=True)


def message(to: str) -> tuple[str, bytes]:
    marker = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.org", to, f"Over DANE {marker}"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="example.org")
    msg.set_content(f"From another provider.\n{marker}\n")
    return marker, msg.as_bytes()


def delivered_verified(stack: RunningStack, sender: SendingPostfix) -> str:
    """Send one message to a new mailbox; wait until it is delivered; return the TLS verdict
    the sending Postfix logged for that delivery's connection."""
    address, _ = stack.new_mailbox()
    _, data = message(address)
    sender.send("someone@example.org", address, data)
    sent = re.compile(rf"to=<{re.escape(address)}>, relay={re.escape(MX)}\[.*status=sent")
    wait_until(lambda: sent.search(sender.log_text()), 60, f"delivery to {address}")
    return last_verdict(sender)


def last_verdict(sender: SendingPostfix) -> str:
    verdicts = re.findall(
        rf"(\w+) TLS connection established to {re.escape(MX)}\[", sender.log_text()
    )
    return verdicts[-1] if verdicts else ""


def deferred_reason(sender: SendingPostfix, recipient: str) -> str | None:
    out = subprocess.run(
        ["postqueue", "-c", str(sender.conf), "-j"], capture_output=True, check=True
    ).stdout
    for line in out.splitlines():
        entry = json.loads(line)
        for rcpt in entry.get("recipients", []):
            if rcpt.get("address") == recipient and entry.get("queue_name") == "deferred":
                return str(rcpt.get("delay_reason", ""))
    return None


def test_another_provider_delivers_to_the_stack_over_verified_tls(
    stack: RunningStack, sender: SendingPostfix
) -> None:
    assert delivered_verified(stack, sender) == "Verified"


def test_an_impostor_certificate_gets_the_mail_deferred_not_lost(
    stack: RunningStack, sender: SendingPostfix, tmp_path: Path
) -> None:
    """Someone answering for the MX with a certificate for the right name from a CA, but not
    the key DNS names: the sender refuses to hand over the message and keeps it."""
    layout = StackLayout.load(stack.root)
    cert, key = certificate(layout, tmp_path, MX)
    postfix_dir = str(stack.root / "etc" / "postfix")
    served = {name: stack.postconf(name) for name in ("smtpd_tls_cert_file", "smtpd_tls_key_file")}

    def serve(cert_file: str, key_file: str) -> None:
        subprocess.run(
            ["postconf", "-c", postfix_dir, "-e",
             f"smtpd_tls_cert_file={cert_file}", f"smtpd_tls_key_file={key_file}"],
            check=True,
        )  # fmt: skip
        subprocess.run(["postfix", "-c", postfix_dir, "reload"], check=True, capture_output=True)

    address, _ = stack.new_mailbox()
    serve(str(cert), str(key))
    try:
        _, data = message(address)
        sender.send("someone@example.org", address, data)
        reason = wait_until(lambda: deferred_reason(sender, address), 60, "deferred")
        assert "Server certificate not verified" in reason
    finally:
        serve(served["smtpd_tls_cert_file"], served["smtpd_tls_key_file"])
    sender.flush()
    sent = re.compile(rf"to=<{re.escape(address)}>, relay={re.escape(MX)}\[.*status=sent")
    wait_until(lambda: sent.search(sender.log_text()), 60, "delivered once the real key is back")
    assert last_verdict(sender) == "Verified"


def rollover(stack: RunningStack, step: str) -> str:
    return admin(stack, "tls", "rollover", step)


def test_a_tls_key_rollover_never_breaks_dane(stack: RunningStack, sender: SendingPostfix) -> None:
    smtp = stack.info["smtp_port"]
    before = presented_spki_sha256(smtp, "smtp")
    refused = ddmail(stack, "admin", "tls", "rollover", "switch", "--root", str(stack.root))
    assert refused.returncode == 1 and "prepare" in refused.stderr

    prepared = rollover(stack, "prepare")
    assert f"_{smtp}._tcp.{MX}." in prepared
    next_key = (stack.root / "tls" / "server.pem.next").read_bytes()
    next_digest = tlsa_3_1_1(next_key).split()[-1]
    assert next_digest in prepared and next_digest != before
    assert delivered_verified(stack, sender) == "Verified"

    # Refused while resolvers may cache the old answer (the stack's TTL is seconds), then
    # while DNS does not serve the next key: nothing changes.
    def attempt() -> subprocess.CompletedProcess[str]:
        return ddmail(stack, "admin", "tls", "rollover", "switch", "--root", str(stack.root))

    def past_the_ttl() -> subprocess.CompletedProcess[str] | None:
        result = attempt()
        return None if "too early" in result.stderr else result

    early = wait_until(past_the_ttl, 30, "the TTL margin")
    assert early.returncode == 1 and "DNS does not serve the next key" in early.stderr
    assert presented_spki_sha256(smtp, "smtp") == before

    zone = publish_own_zone(stack)  # now with both keys' TLSA records
    assert before in zone and next_digest in zone
    assert delivered_verified(stack, sender) == "Verified"

    wait_until(lambda: attempt().returncode == 0, 30, "the switch, once DNS serves the key")
    assert presented_spki_sha256(smtp, "smtp") == next_digest
    assert "finish" in rollover(stack, "status")
    assert delivered_verified(stack, sender) == "Verified"

    finished = rollover(stack, "finish")
    assert before in finished
    zone = publish_own_zone(stack)
    assert before not in zone and next_digest in zone
    assert delivered_verified(stack, sender) == "Verified"
    assert rollover(stack, "status").strip() == "no rollover under way"
