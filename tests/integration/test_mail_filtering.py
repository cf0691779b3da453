"""rspamd and clamd in the real mail path (issue 10): what a sender and a user notice.

Spam over the reject score and malware are refused at SMTP time (5xx, nothing stored, no
bounce); spam over the Junk score is filed into Junk; moving mail into or out of Junk teaches
rspamd; forged verdicts from outside are removed; and with a filter down, mail is deferred
(4xx) instead of being lost or delivered unchecked.
"""

from __future__ import annotations

import base64
import smtplib
import uuid
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import pytest

from ddmail_stack.filters import CUSTOM_MARKER, EICAR
from tests.integration.test_mail_flow import fetch_all
from tests.stackrun import RunningStack, wait_until

# rspamd's GTUBE strings: the standard one means "reject"; its test variant (enabled in the
# local stack only, rspamd_test_patterns) means "add header", i.e. Junk.
GTUBE_REJECT = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_JUNK = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(to: str, subject: str, body: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.org", to, subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def send(stack: RunningStack, msg: EmailMessage) -> None:
    with stack.smtp() as smtp:
        smtp.send_message(msg)


def refused(stack: RunningStack, msg: EmailMessage) -> tuple[int, str]:
    """The code and text of the refusal, whichever command it came at."""
    with pytest.raises(smtplib.SMTPResponseException) as caught, stack.smtp() as smtp:
        smtp.send_message(msg)
    error = caught.value.smtp_error
    return caught.value.smtp_code, error.decode() if isinstance(error, bytes) else error


def with_marker(stack: RunningStack, address: str, password: str, name: str, marker: str) -> bool:
    return any(marker.encode() in m for m in fetch_all(stack, address, password, name))


def stored_anywhere(stack: RunningStack, address: str) -> list[Path]:
    """Every message file of the mailbox, in any folder."""
    local, _, domain = address.partition("@")
    maildir = stack.mail_root / domain / local / "Maildir"
    return [p for p in maildir.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")]


def bounced(stack: RunningStack, marker: str) -> bool:
    """A bounce would leave through the relay to the stack's stand-in for the Internet."""
    return bool(stack.sink_files(marker))


def test_spam_over_the_reject_score_is_refused_at_data_with_nothing_stored(
    stack: RunningStack,
) -> None:
    address, _ = stack.new_mailbox()
    marker = uuid.uuid4().hex
    code, text = refused(stack, message(address, marker, f"{GTUBE_REJECT}\n{marker}"))
    assert code == 554 and text.startswith("5.7.1"), (code, text)
    assert not stored_anywhere(stack, address)
    assert not bounced(stack, marker)
    assert not stack.postqueue()


def test_spam_over_the_junk_score_is_filed_into_junk_and_read_over_imaps(
    stack: RunningStack,
) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    send(stack, message(address, f"offer {marker}", f"{GTUBE_JUNK}\n{marker}"))
    wait_until(lambda: with_marker(stack, address, password, "Junk", marker), what="Junk")
    assert not with_marker(stack, address, password, "INBOX", marker)
    (stored,) = fetch_all(stack, address, password, "Junk")
    assert BytesParser(policy=default_policy).parsebytes(stored)["X-Spam"] == "Yes"
    assert all(f.read_bytes().startswith(b"CRYPTED") for f in stored_anywhere(stack, address))


def test_a_sender_cannot_file_spam_out_of_junk_by_writing_our_header(
    stack: RunningStack,
) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    send(stack, message(address, f"offer {marker}", f"{GTUBE_JUNK}\n{marker}", X_Spam="No"))
    wait_until(lambda: with_marker(stack, address, password, "Junk", marker), what="Junk")
    (stored,) = fetch_all(stack, address, password, "Junk")
    assert BytesParser(policy=default_policy).parsebytes(stored).get_all("X-Spam") == ["Yes"]
    assert not fetch_all(stack, address, password, "INBOX")


def test_forged_authentication_results_are_replaced_by_ours(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    msg = message(address, f"results {marker}", marker)
    msg["Authentication-Results"] = "mail.ddmail.test; dkim=pass header.d=bank.example"
    msg["Authentication-Results"] = "mail.ddmail.test; spf=pass smtp.mailfrom=bank.example"
    send(stack, msg)
    wait_until(lambda: with_marker(stack, address, password, "INBOX", marker), what="INBOX")
    (stored,) = fetch_all(stack, address, password, "INBOX")
    parsed = BytesParser(policy=default_policy).parsebytes(stored)
    results = parsed.get_all("Authentication-Results") or []
    assert len(results) == 1, results
    assert "bank.example" not in results[0]
    assert results[0].startswith("mail.ddmail.test;")
    assert "spf=" in results[0] and "dmarc=" in results[0]


@pytest.mark.parametrize("payload", [EICAR, CUSTOM_MARKER], ids=["eicar", "own-signature"])
def test_malware_attachment_is_refused_at_data_nothing_stored_no_bounce(
    stack: RunningStack, payload: bytes
) -> None:
    address, _ = stack.new_mailbox()
    marker = uuid.uuid4().hex
    msg = message(address, f"invoice {marker}", f"see attachment {marker}")
    msg.add_attachment(payload, maintype="application", subtype="octet-stream", filename="a.com")
    assert base64.b64encode(payload[:30]).decode()[:20] in msg.as_string()  # really encoded
    code, text = refused(stack, msg)
    assert code == 554 and "Malware found" in text, (code, text)
    assert not stored_anywhere(stack, address)
    assert not bounced(stack, marker)


def learned(stack: RunningStack, verdict: str, subject_marker: str) -> bool:
    """rspamd's controller logs each message it learned, by Message-ID."""
    log = (stack.log_dir / "rspamd.log").read_text(errors="replace")
    return f"learned message as {verdict}: {subject_marker}" in log


def test_moving_mail_into_and_out_of_junk_teaches_rspamd(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    spam_id = f"<spam-{uuid.uuid4().hex}@sender.example>"
    ham_id = f"<ham-{uuid.uuid4().hex}@sender.example>"
    send(stack, message(address, "a real letter", "Dear friend, see you soon.", Message_ID=ham_id))
    send(stack, message(address, "offer", f"{GTUBE_JUNK}\n", Message_ID=spam_id))
    wait_until(lambda: fetch_all(stack, address, password, "Junk"), what="Junk")
    wait_until(lambda: fetch_all(stack, address, password, "INBOX"), what="INBOX")
    with stack.imap() as imap:
        imap.login(address, password)
        imap.select("Junk")
        _, uids = imap.uid("SEARCH", None, "ALL")  # type: ignore[arg-type]
        assert imap.uid("MOVE", uids[0].decode(), "INBOX")[0] == "OK"
        imap.select("INBOX")
        _, found = imap.uid("SEARCH", None, f'HEADER Message-ID "{ham_id}"')  # type: ignore[arg-type]
        assert imap.uid("MOVE", found[0].decode(), "Junk")[0] == "OK"
        imap.logout()
    wait_until(lambda: learned(stack, "ham", spam_id.strip("<>")), what="learned as ham")
    wait_until(lambda: learned(stack, "spam", ham_id.strip("<>")), what="learned as spam")


def test_filter_down_defers_inbound_mail_which_arrives_once_it_is_back(
    stack: RunningStack,
) -> None:
    """rspamd stopped: port 25 answers 4xx (the sender's server keeps the mail and retries),
    submission gets a temporary error; nothing is stored unfiltered. Back: delivered."""
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    msg = message(address, f"while down {marker}", marker)
    stack.stop_filter("rspamd")
    try:
        code, text = refused(stack, msg)
        assert code == 451 and text.startswith("4."), (code, text)
        with (
            pytest.raises(smtplib.SMTPResponseException) as caught,
            stack.submit("587", address, password) as smtp,
        ):
            submitted = message(address, "submitted", marker)
            submitted.replace_header("From", address)
            smtp.send_message(submitted)
        # Refused before AUTH even (454 4.3.0): a temporary error the client retries.
        assert 400 <= caught.value.smtp_code < 500, caught.value
        assert not stored_anywhere(stack, address)
    finally:
        stack.start_filter("rspamd")
    send(stack, msg)  # the sending server's retry
    wait_until(lambda: with_marker(stack, address, password, "INBOX", marker), what="delivery")


def test_malware_scanner_down_defers_instead_of_letting_mail_through(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    msg = message(address, f"scanner down {marker}", marker)
    stack.expect_log_errors(r"clamav|clamd|CLAM_VIRUS_FAIL")
    stack.stop_filter("clamd")
    try:
        code, text = refused(stack, msg)
        assert code == 451 and "Malware scanner unavailable" in text, (code, text)
        assert not stored_anywhere(stack, address)
    finally:
        stack.start_filter("clamd")
    send(stack, msg)
    wait_until(lambda: with_marker(stack, address, password, "INBOX", marker), what="delivery")
