"""The service over Tor and I2P (issue 12), through the loopback listeners the onion service and
i2pd's tunnels forward to (a test cannot reach those networks): the panel over plain HTTP, IMAP
LOGIN and submission AUTH without TLS there and only there, the same sender rules, no header or
log line that tells such a user from a clearnet one, and no penalty keyed on 127.0.0.1."""

from __future__ import annotations

import imaplib
import re
import smtplib
import uuid
from email.utils import formatdate, make_msgid

import pytest

from tests.httpsbrowser import HttpsBrowser
from tests.integration.test_mail_flow import inbox_has
from tests.panelforms import codes
from tests.stackrun import RunningStack, wait_until


def note(sender: str, marker: str, to: str = "friend@example.net") -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: a note {marker}\r\n"
        f"Date: {formatdate()}\r\nMessage-ID: {make_msgid(domain='example.net')}\r\n\r\n"
        f"Hello {marker}\r\n"
    ).encode()


def anon_panel(stack: RunningStack) -> HttpsBrowser:
    onion = stack.info["onion_address"]
    return HttpsBrowser(f"http://127.0.0.1:{stack.info['anon_http_port']}", None, onion)


def test_the_pages_publish_the_names_the_stacks_tor_and_i2pd_made(stack: RunningStack) -> None:
    onion, i2p = stack.info["onion_address"], stack.info["i2p_address"]
    assert onion.endswith(".onion") and i2p.endswith(".b32.i2p")
    clearnet = HttpsBrowser(stack.info["web_url"], stack.tls())
    help_page = clearnet.get("/help")
    assert f"http://{onion}/" in help_page.text and i2p in help_page.text
    assert help_page.headers["Onion-Location"] == f"http://{onion}/help"
    autoconfig = anon_panel(stack).get("/.well-known/autoconfig/mail/config-v1.1.xml").text
    assert f"<hostname>{onion}</hostname>" in autoconfig and "plain" in autoconfig


def test_the_panel_works_over_plain_http_on_the_anonymity_listener(stack: RunningStack) -> None:
    browser = anon_panel(stack)
    reg = browser.register()
    login = browser.login(reg)
    assert login.status == 302 and login.headers["Location"].endswith("/settings")
    assert "Strict-Transport-Security" not in login.headers
    session = [c for c in browser.set_cookies if c.startswith("ddmail_session=")]
    assert session and "Secure" not in session[-1] and "HttpOnly" in session[-1]
    assert not any(c.startswith("__Host-") for c in browser.set_cookies)
    settings = browser.get("/settings")
    assert f"Logged in as user: {reg.username}" in settings.text
    local = "t" + uuid.uuid4().hex[:9]
    made = browser.post(
        "/settings/mailboxes", {"local_part": local, "domain": stack.info["global_domain"]}
    )
    password = codes(made.text)["mailbox-password"]
    # The mailbox made over Tor is read over Tor.
    with stack.imap_anon() as imap:
        assert imap.login(f"{local}@{stack.info['global_domain']}", password)[0] == "OK"


def test_imap_login_without_tls_works_there_and_nowhere_else(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    stack.deliver(address, f"for tor {marker}", marker)
    wait_until(lambda: inbox_has(stack, address, password, marker), what="delivery")
    with stack.imap_anon() as imap:
        assert "LOGINDISABLED" not in imap.capabilities
        imap.login(address, password)
        imap.select("INBOX")
        _, found = imap.search(None, "BODY", marker)
        assert found[0].split()
    # The clearnet IMAP port speaks only TLS: a plain IMAP client never gets a greeting.
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        imaplib.IMAP4("127.0.0.1", stack.info["imaps_port"], timeout=5)


def test_submission_auth_without_tls_there_and_only_there(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    with stack.smtp("submission_port") as s:
        s.ehlo()
        assert not s.has_extn("auth")  # 587 offers AUTH only after STARTTLS
        with pytest.raises(smtplib.SMTPException):
            s.login(address, password)
    marker = uuid.uuid4().hex
    with stack.submit("anon", address, password) as s:
        assert not s.has_extn("starttls")  # no certificate could name an onion or I2P host
        s.sendmail(address, ["friend@example.net"], note(address, marker))
    wait_until(lambda: stack.sink_files(marker), what="the message at the sink")
    (sent,) = stack.sink_files(marker)
    headers = sent.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode()
    port = str(stack.info["anon_submission_port"])
    for telltale in ("127.0.0.1", "localhost", port, "anon", "tor", "onion", "i2p", "ESMTPA"):
        assert not re.search(rf"\b{re.escape(telltale)}\b", headers, re.IGNORECASE), (
            telltale,
            headers,
        )


def test_the_sender_rules_hold_over_the_anonymity_listener(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    with stack.submit("anon", address, password) as s:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail(address, ["friend@example.net"], note("ceo@bank.example", marker))
        assert refused.value.smtp_code == 550
    with stack.submit("anon", address, password) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as mismatch:
            s.sendmail("someone-else@example.org", ["friend@example.net"], note(address, marker))
        assert "not owned" in str(mismatch.value)
    assert not stack.sink_files(marker)
    # Without a login nothing is taken.
    with stack.smtp("anon_submission_port") as s, pytest.raises(smtplib.SMTPSenderRefused) as anon:
        s.sendmail(address, ["friend@example.net"], note(address, marker))
    assert anon.value.smtp_code == 530


def test_a_burst_of_failed_logins_does_not_lock_out_the_next_user(stack: RunningStack) -> None:
    """Every Tor and I2P user arrives from 127.0.0.1: failures of one must not slow down or
    refuse the others (no penalty keyed on the client address)."""
    address, password = stack.new_mailbox()
    for _ in range(12):
        with stack.imap_anon() as imap, pytest.raises(imaplib.IMAP4.error):
            imap.login(address, "wrong-" + uuid.uuid4().hex)
        with (
            stack.smtp("anon_submission_port") as s,
            pytest.raises(smtplib.SMTPAuthenticationError),
        ):
            s.login(address, "wrong-" + uuid.uuid4().hex)
    # Dovecot's penalty on 127.0.0.1 would hold these answers for up to 15 s: 10 s is ample.
    with imaplib.IMAP4("127.0.0.1", stack.info["anon_imap_port"], timeout=10) as imap:
        assert imap.login(address, password)[0] == "OK"
    with smtplib.SMTP("127.0.0.1", stack.info["anon_submission_port"], timeout=10) as s:
        assert s.login(address, password)[0] == 235
    browser = anon_panel(stack)
    reg = browser.register()
    for _ in range(5):
        browser.login(type(reg)(reg.account, reg.username, "wrong-password", reg.keyfile))
    other = anon_panel(stack)
    assert other.login(other.register()).status == 302


def test_the_logs_do_not_tell_a_tor_user_from_a_clearnet_one(stack: RunningStack) -> None:
    """A login over IMAP and a submission, once over TLS and once over the anonymity listener:
    after taking out what differs between any two sessions (time, process and queue ids,
    session ids, the user), their log lines are the same."""
    clear_user, clear_password = stack.new_mailbox()
    anon_user, anon_password = stack.new_mailbox()
    with stack.imap() as tls_imap:
        tls_imap.login(clear_user, clear_password)
    with stack.imap_anon() as imap:
        imap.login(anon_user, anon_password)
    markers = []
    for port, user, password in (
        ("465", clear_user, clear_password),
        ("anon", anon_user, anon_password),
    ):
        markers.append(uuid.uuid4().hex)
        with stack.submit(port, user, password) as s:
            s.sendmail(user, ["friend@example.net"], note(user, markers[-1]))
    wait_until(lambda: all(stack.sink_files(m) for m in markers), what="both at the sink")

    def lines(user: str) -> list[str]:
        logs = [stack.log_dir / "dovecot.log", stack.log_dir / "postfix.log"]
        found = [
            line
            for log in logs
            for line in log.read_text(errors="replace").splitlines()
            if user in line
        ]
        return found

    def shape(line: str, user: str) -> str:
        line = line.replace(user, "USER")
        line = re.sub(r"^\S+ \S+ \S+ ", "", line)  # time stamp
        line = re.sub(r"\[\d+\]", "[PID]", line)
        line = re.sub(r"<[A-Za-z0-9+/=]{10,}>", "<SESSION>", line)
        line = re.sub(r"\b[0-9A-F]{8,}\b", "QUEUEID", line)
        line = re.sub(r"mpid=\d+|<\d+>", "N", line)
        line = re.sub(r"size=\d+", "size=N", line)  # of the message (its ids differ in length)
        return re.sub(r"in=\d+ out=\d+", "in=N out=N", line)

    clear = {shape(line, clear_user) for line in lines(clear_user)}
    anon = {shape(line, anon_user) for line in lines(anon_user)}
    assert anon and anon <= clear, sorted(anon - clear)
