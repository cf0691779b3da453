"""SPF, DKIM and DMARC of incoming mail, checked by the stack's rspamd against a real
authoritative DNS server (NSD, `ddmail stack up --dns`) that serves each sender's records
(issue 10): a domain whose DMARC says p=reject and whose SPF and DKIM fail is refused at SMTP
time (no bounce, nothing stored); a domain that passes arrives with our verdicts in
Authentication-Results."""

from __future__ import annotations

import base64
import smtplib
import uuid
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import formatdate, make_msgid

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.authdns import AuthDns
from tests.integration.test_mail_filtering import bounced, stored_anywhere, with_marker
from tests.integration.test_mail_flow import fetch_all
from tests.stackrun import RunningStack, wait_until

pytestmark = pytest.mark.postgres

# Test zones' own sending host (TEST-NET-1): never the stack's client address 127.0.0.1.
ELSEWHERE = "192.0.2.1"


def authdns(stack: RunningStack) -> AuthDns:
    assert stack.dns is not None, "the shared stack resolves through NSD (tests/conftest.py)"
    return stack.dns


def sender_domain(stack: RunningStack, spf_hosts: str, dmarc: str, extra: str = "") -> str:
    """A fresh sender domain whose SPF allows SPF_HOSTS and whose DMARC policy is DMARC."""
    domain = f"s{uuid.uuid4().hex[:10]}.example"
    authdns(stack).publish(
        domain,
        f'@ IN TXT "v=spf1 {spf_hosts} -all"\n'
        f'_dmarc IN TXT "{dmarc}"\n'
        f"@ IN MX 10 mx\nmx IN A {ELSEWHERE}\n{extra}",
    )
    return domain


def letter(sender: str, to: str, marker: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, f"Hello {marker}"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=sender.split("@")[1])
    msg.set_content(f"A letter from a domain of its own.\n{marker}\n")
    return msg


def results_of(stack: RunningStack, address: str, password: str) -> str:
    (stored,) = fetch_all(stack, address, password, "INBOX")
    parsed = BytesParser(policy=default_policy).parsebytes(stored)
    (results,) = parsed.get_all("Authentication-Results") or []
    return str(results)


def test_dmarc_reject_with_failing_spf_and_no_dkim_is_refused_at_smtp_time(
    stack: RunningStack,
) -> None:
    address, _ = stack.new_mailbox()
    domain = sender_domain(stack, f"ip4:{ELSEWHERE}", "v=DMARC1; p=reject")
    marker = uuid.uuid4().hex
    with pytest.raises(smtplib.SMTPResponseException) as refused, stack.smtp() as smtp:
        smtp.send_message(letter(f"ceo@{domain}", address, marker), from_addr=f"ceo@{domain}")
    assert 500 <= refused.value.smtp_code < 600, refused.value
    assert not stored_anywhere(stack, address)
    assert not bounced(stack, marker)
    assert not stack.postqueue()


def test_the_same_failure_under_p_none_is_delivered_and_says_so(stack: RunningStack) -> None:
    """The refusal above comes from the domain's policy, not from the failure alone."""
    address, password = stack.new_mailbox()
    domain = sender_domain(stack, f"ip4:{ELSEWHERE}", "v=DMARC1; p=none")
    marker = uuid.uuid4().hex
    with stack.smtp() as smtp:
        smtp.send_message(letter(f"news@{domain}", address, marker), from_addr=f"news@{domain}")
    wait_until(lambda: with_marker(stack, address, password, "INBOX", marker), what="INBOX")
    results = results_of(stack, address, password)
    assert "spf=fail" in results and f"smtp.mailfrom=news@{domain}" in results, results
    assert f'dmarc=fail reason="No valid SPF, No valid DKIM" header.from={domain}' in results


def test_a_sender_that_passes_spf_and_dkim_arrives_with_our_verdicts(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    chunks = " ".join(f'"{public[i : i + 200]}"' for i in range(0, len(public), 200))
    domain = sender_domain(
        stack,
        "ip4:127.0.0.1",
        "v=DMARC1; p=reject",
        extra=f'sel._domainkey IN TXT "v=DKIM1; k=rsa; p=" {chunks}\n',
    )
    marker = uuid.uuid4().hex
    raw = letter(f"info@{domain}", address, marker).as_bytes()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signature = dkim.sign(raw, b"sel", domain.encode(), pem, include_headers=[b"from", b"subject"])
    with stack.smtp() as smtp:
        smtp.sendmail(f"info@{domain}", [address], signature + raw)
    wait_until(lambda: with_marker(stack, address, password, "INBOX", marker), what="INBOX")
    results = results_of(stack, address, password)
    assert f"dkim=pass header.d={domain}" in results, results
    assert "spf=pass" in results and f"smtp.mailfrom=info@{domain}" in results, results
    assert f"dmarc=pass (policy=reject) header.from={domain}" in results, results
