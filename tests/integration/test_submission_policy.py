"""Submission policy through the real stack (Postfix 587/465 + ddmail-milter): header From and
Sender must be owned by the SASL login, the null sender is refused, client-identifying headers
are stripped, and each login has a send limit."""

from __future__ import annotations

import smtplib
import urllib.request
import uuid
from collections.abc import Callable
from email.utils import formatdate, make_msgid

import pytest

from ddmail_stack.config_file import STACK_SEND_LIMIT_RECIPIENTS
from tests.integration.test_mail_flow import fetch_all
from tests.stackrun import TEST_RECOVERY, RunningStack, wait_until

PORTS = ("587", "465")


def raw(headers: dict[str, str], marker: str) -> bytes:
    """A well-formed message (a bare one would rightly be filed into Junk on port 25)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"{head}To: <friend@example.net>\r\nSubject: note {marker}\r\nDate: {formatdate()}\r\n"
        f"Message-ID: {make_msgid()}\r\n\r\nA short note: {marker}\r\n"
    ).encode()


def other_account_mailbox(stack: RunningStack) -> str:
    account = "other-" + uuid.uuid4().hex[:8]
    client = stack.client()
    client.call("POST", "/v1/accounts/recovery-key", {"account": account, "secret": TEST_RECOVERY})
    made = client.call(
        "POST",
        "/v1/mailboxes",
        {"account": account, "address": f"o{uuid.uuid4().hex[:10]}@{stack.info['global_domain']}"},
    )
    return str(made["address"])


def refused_at_data(
    stack: RunningStack, port: str, envelope: str | None, headers: Callable[[str], dict[str, str]]
) -> smtplib.SMTPDataError:
    """Send as a fresh mailbox with the headers HEADERS(own address); expect a DATA refusal."""
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    with stack.submit(port, address, password) as s, pytest.raises(smtplib.SMTPDataError) as exc:
        s.sendmail(envelope or address, ["friend@example.net"], raw(headers(address), marker))
    assert not stack.sink_files(marker)
    return exc.value


@pytest.mark.parametrize("port", PORTS)
def test_forged_header_from_of_another_account_is_refused_on_submission(
    stack: RunningStack, port: str
) -> None:
    victim = other_account_mailbox(stack)
    err = refused_at_data(stack, port, None, lambda own: {"From": f"Bob <{victim}>"})
    assert err.smtp_code == 550 and b"5.7.1" in err.smtp_error
    assert victim.encode() in err.smtp_error


@pytest.mark.parametrize("port", PORTS)
def test_external_header_from_is_refused_on_submission(stack: RunningStack, port: str) -> None:
    err = refused_at_data(stack, port, None, lambda own: {"From": "CEO <ceo@bank.example>"})
    assert err.smtp_code == 550 and b"5.7.1" in err.smtp_error


@pytest.mark.parametrize("port", PORTS)
def test_one_forged_address_among_owned_ones_is_refused(stack: RunningStack, port: str) -> None:
    err = refused_at_data(
        stack, port, None, lambda own: {"From": f"{own}, group: ceo@bank.example;"}
    )
    assert err.smtp_code == 550 and b"ceo@bank.example" in err.smtp_error


@pytest.mark.parametrize("port", PORTS)
def test_forged_sender_header_is_refused_on_submission(stack: RunningStack, port: str) -> None:
    victim = other_account_mailbox(stack)
    err = refused_at_data(stack, port, None, lambda own: {"From": own, "Sender": victim})
    assert err.smtp_code == 550 and b"Sender" in err.smtp_error


@pytest.mark.parametrize("port", PORTS)
def test_message_without_header_from_is_refused(stack: RunningStack, port: str) -> None:
    err = refused_at_data(stack, port, None, lambda own: {"Reply-To": own})
    assert err.smtp_code == 550 and b"no From header" in err.smtp_error


@pytest.mark.parametrize("port", PORTS)
def test_ambiguous_header_from_is_refused(stack: RunningStack, port: str) -> None:
    # Python reads this as the owned address; a receiver may show the other one.
    err = refused_at_data(stack, port, None, lambda own: {"From": f"{own} <ceo@bank.example>"})
    assert err.smtp_code == 550 and b"5.7.1" in err.smtp_error


@pytest.mark.parametrize("port", PORTS)
def test_null_sender_is_refused_on_submission(stack: RunningStack, port: str) -> None:
    address, password = stack.new_mailbox()
    with stack.submit(port, address, password) as s:
        code, reply = s.mail("<>")
        assert code == 553 and b"5.7.1" in reply
        s.rset()
        # ... also with the sender's own From header.
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            s.sendmail("", ["friend@example.net"], raw({"From": address}, "x"))
        assert exc.value.smtp_code == 553


@pytest.mark.parametrize("port", PORTS)
def test_own_mailbox_as_header_from_is_accepted(stack: RunningStack, port: str) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    local, _, domain = address.partition("@")
    # Another case, an encoded display name and a comment: still the login's own address.
    header_from = f"=?utf-8?q?Al=C3=AFce?= <{local.upper()}@{domain.upper()}> (me)"
    with stack.submit(port, address, password) as s:
        s.sendmail(address, ["friend@example.net"], raw({"From": header_from}, marker))
    wait_until(lambda: stack.sink_files(marker), what="mail in the sink")


@pytest.mark.parametrize("port", PORTS)
def test_alias_of_own_account_as_header_from_is_accepted(stack: RunningStack, port: str) -> None:
    address, password = stack.new_mailbox()
    alias = stack.new_alias(address)
    marker = uuid.uuid4().hex
    with stack.submit(port, address, password) as s:
        s.sendmail(
            address,
            ["friend@example.net"],
            raw({"From": f"Me <{alias}>", "Sender": address}, marker),
        )
    wait_until(lambda: stack.sink_files(marker), what="mail in the sink")


def test_client_identifying_headers_are_stripped_on_submission(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    identifying = {
        "User-Agent": "Mozilla/5.0 Thunderbird/115.0",
        "X-Mailer": "Secret Mailer 1.0",
        "X-Originating-IP": "[203.0.113.7]",
        "X-Forwarded-For": "203.0.113.7",
    }
    with stack.submit("587", address, password) as s:
        s.sendmail(address, ["friend@example.net"], raw({"From": address, **identifying}, marker))
    delivered = wait_until(lambda: stack.sink_files(marker), what="mail in the sink")[0]
    head = delivered.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
    for name in identifying:
        assert f"\n{name.lower()}:".encode() not in b"\n" + head
    assert b"203.0.113.7" not in delivered and b"Thunderbird" not in delivered


def test_about_page_tells_that_client_identifying_headers_are_removed(
    stack: RunningStack,
) -> None:
    url = stack.info["web_url"] + "/about"
    with urllib.request.urlopen(url, context=stack.tls(), timeout=30) as page:
        text = " ".join(page.read().decode().split())
    assert "removes the headers that name your mail program or your address" in text
    assert "User-Agent, X-Mailer, X-Originating-IP" in text


def test_client_identifying_headers_are_kept_on_port_25(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    with stack.smtp() as s:
        s.sendmail(
            "someone@example.org",
            [address],
            raw({"From": "someone@example.org", "X-Mailer": f"Their Mailer {marker}"}, marker),
        )
    stored = wait_until(
        lambda: [m for m in fetch_all(stack, address, password) if marker.encode() in m],
        what="delivery",
    )
    assert f"X-Mailer: Their Mailer {marker}".encode() in stored[0]


def test_send_limit_per_login_defers_with_4_7(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    with stack.submit("465", address, password) as s:
        # Exactly the limit fits: recipients are what is counted.
        batch = [f"r{i}@example.net" for i in range(10)]
        sent = 0
        while sent + len(batch) <= STACK_SEND_LIMIT_RECIPIENTS:
            s.sendmail(address, batch, raw({"From": address}, uuid.uuid4().hex))
            sent += len(batch)
        remaining = STACK_SEND_LIMIT_RECIPIENTS - sent
        if remaining:
            s.sendmail(address, batch[:remaining], raw({"From": address}, uuid.uuid4().hex))
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            s.sendmail(address, ["one.more@example.net"], raw({"From": address}, "over"))
        assert exc.value.smtp_code == 450 and b"4.7.1" in exc.value.smtp_error
    # Another login is not affected: the limit is per login, not per address or connection.
    other, other_password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    with stack.submit("465", other, other_password) as s:
        s.sendmail(other, ["friend@example.net"], raw({"From": other}, marker))
    wait_until(lambda: stack.sink_files(marker), what="mail in the sink")


def test_submission_fails_closed_while_the_milter_is_down(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    sock = stack.root / "run" / "milter.sock"
    stack.stop_service("milter", sock)
    try:
        # Postfix answers every command after the greeting with 4xx (here: AUTH, 454 4.3.0).
        with (
            pytest.raises(smtplib.SMTPResponseException) as exc,
            stack.submit("465", address, password) as s,
        ):
            s.sendmail(address, ["friend@example.net"], raw({"From": address}, marker))
        assert 400 <= exc.value.smtp_code < 500, exc.value
    finally:
        stack.start_service("milter", sock)
    assert not stack.sink_files(marker)
    with stack.submit("465", address, password) as s:
        s.sendmail(address, ["friend@example.net"], raw({"From": address}, marker))
    wait_until(lambda: stack.sink_files(marker), what="mail in the sink")
