"""Mail through real Postfix and Dovecot: delivered, readable with the password, encrypted at
rest, routed by aliases, and refused where it must be."""

from __future__ import annotations

import smtplib
import uuid
from email.message import EmailMessage

import pytest

from tests.stackrun import TEST_ACCOUNT, TEST_RECOVERY, RunningStack, wait_until


def fetch_all(
    stack: RunningStack, address: str, password: str, folder: str = "INBOX"
) -> list[bytes]:
    with stack.imap() as imap:
        imap.login(address, password)
        imap.select(folder)
        _, data = imap.search(None, "ALL")
        messages = []
        for num in data[0].split():
            _, parts = imap.fetch(num, "(BODY.PEEK[])")
            messages.append(bytes(parts[0][1]))  # type: ignore[index]
        return messages


def inbox_has(stack: RunningStack, address: str, password: str, marker: str) -> bool:
    return any(marker.encode() in m for m in fetch_all(stack, address, password))


def stored_files(stack: RunningStack, address: str) -> list[bytes]:
    local, _, domain = address.partition("@")
    maildir = stack.mail_root / domain / local / "Maildir"
    return [p.read_bytes() for sub in ("new", "cur") for p in (maildir / sub).glob("*")]


def test_mail_lands_encrypted_and_reads_back_over_imaps(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    stack.deliver(address, f"subject {marker}", f"body {marker}")
    wait_until(lambda: stored_files(stack, address), what="delivery")
    files = stored_files(stack, address)
    assert files and all(f.startswith(b"CRYPTED") for f in files)
    assert not any(marker.encode() in f for f in files)
    assert inbox_has(stack, address, password, f"body {marker}")


def test_stored_mail_names_no_internal_hop_or_machine(stack: RunningStack) -> None:
    """Only the MX's own Received line: no LMTP hop naming the machine's host name."""
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    stack.deliver(address, "hops", marker)
    wait_until(lambda: inbox_has(stack, address, password, marker), what="delivery")
    (message,) = fetch_all(stack, address, password)
    received = [line for line in message.split(b"\r\n") if line.startswith(b"Received:")]
    assert len(received) == 1, received
    assert b"LMTP" not in message.split(b"\r\n\r\n")[0]


def test_wrong_password_is_an_authentication_failure(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    with stack.imap() as imap, pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        imap.login(address, password + "x")


def test_password_change_keeps_old_mail(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    stack.deliver(address, "before change", marker)
    wait_until(lambda: stored_files(stack, address), what="delivery")
    new = stack.client().call(
        "POST",
        "/v1/mailboxes/password",
        {"account": TEST_ACCOUNT, "address": address, "current_password": password},
    )["password"]
    with stack.imap() as imap, pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        imap.login(address, password)
    assert inbox_has(stack, address, new, marker)


def test_reset_with_recovery_secret_keeps_old_mail(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    stack.deliver(address, "before reset", marker)
    wait_until(lambda: stored_files(stack, address), what="delivery")
    new = stack.client().call(
        "POST",
        "/v1/mailboxes/reset",
        {"account": TEST_ACCOUNT, "address": address, "recovery_secret": TEST_RECOVERY},
    )["password"]
    with stack.imap() as imap, pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        imap.login(address, password)
    assert inbox_has(stack, address, new, marker)


def test_removed_mailbox_is_gone_for_good(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    stack.deliver(address, "to be shredded", "x")
    wait_until(lambda: stored_files(stack, address), what="delivery")
    answer = stack.client().call(
        "POST", "/v1/mailboxes/remove", {"account": TEST_ACCOUNT, "address": address}
    )
    assert answer["state"] == "removed"
    with stack.imap() as imap, pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        imap.login(address, password)
    local, _, domain = address.partition("@")
    assert not (stack.mail_root / domain / local).exists()
    with pytest.raises(Exception, match="cannot be created again"):
        stack.client().call("POST", "/v1/mailboxes", {"account": TEST_ACCOUNT, "address": address})
    with stack.smtp() as s, pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        s.sendmail("someone@example.org", [address], b"Subject: x\r\n\r\nx\r\n")
    assert exc.value.recipients[address][0] == 550


def test_alias_with_two_destinations_delivers_to_both(stack: RunningStack) -> None:
    a, pa = stack.new_mailbox()
    b, pb = stack.new_mailbox()
    alias = stack.new_alias(a, b, prefix="team")
    marker = uuid.uuid4().hex
    stack.deliver(alias, "to the team", marker)
    wait_until(lambda: inbox_has(stack, a, pa, marker), what="delivery to a")
    wait_until(lambda: inbox_has(stack, b, pb, marker), what="delivery to b")


def test_unknown_recipient_is_550_and_relay_is_554(stack: RunningStack) -> None:
    with stack.smtp() as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as unknown:
            s.sendmail("someone@example.org", [f"nobody@{stack.info['global_domain']}"], b"x")
        assert next(iter(unknown.value.recipients.values()))[0] == 550
    with stack.smtp() as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as relay:
            s.sendmail("someone@example.org", ["victim@example.net"], b"x")
        assert next(iter(relay.value.recipients.values()))[0] == 554


def _outgoing(sender: str, marker: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "friend@example.net", marker
    msg.set_content(marker)
    return msg


def test_submission_587_starttls_sends_to_the_internet(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    with stack.submit("587", address, password) as s:
        s.send_message(_outgoing(address, marker))
    wait_until(lambda: stack.sink_files(marker), what="mail in the sink")


def test_submissions_465_sends_to_the_internet(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    with stack.submit("465", address, password) as s:
        s.send_message(_outgoing(address, marker))
    wait_until(lambda: stack.sink_files(marker), what="mail in the sink")


def test_submission_refuses_auth_without_tls(stack: RunningStack) -> None:
    with stack.smtp("submission_port") as s:
        s.ehlo()
        assert not s.has_extn("auth")


def test_sending_as_someone_else_is_refused(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    other, _ = stack.new_mailbox()
    with stack.submit("465", address, password) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
            s.send_message(_outgoing(other, "spoof"))
        assert next(iter(exc.value.recipients.values()))[0] == 553


def test_sending_as_own_alias_is_allowed(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    alias = stack.new_alias(address)
    marker = uuid.uuid4().hex
    with stack.submit("465", address, password) as s:
        s.send_message(_outgoing(alias, marker))
    wait_until(lambda: stack.sink_files(marker), what="mail in the sink")


def test_bad_smtp_auth_password_is_535(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    with stack.smtps() as s, pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        s.login(address, "wrong" + password)
    assert exc.value.smtp_code == 535
