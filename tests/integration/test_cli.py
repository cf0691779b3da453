"""The operator's and the tinkerer's commands against a running stack."""

from __future__ import annotations

import smtplib
import subprocess
import uuid
from email.utils import formatdate, make_msgid

import dns.rdatatype
import dns.zone
import pytest

from tests.integration.test_mail_flow import inbox_has
from tests.stackrun import VENV_BIN, RunningStack, wait_until


def ddmail(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ddmail"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_add_mailbox_prints_a_password_that_logs_in(stack: RunningStack) -> None:
    address = f"cli{uuid.uuid4().hex[:8]}@{stack.info['global_domain']}"
    result = ddmail(stack, "stack", "add-mailbox", "--root", str(stack.root), address)
    assert result.returncode == 0, result.stderr
    password = result.stdout.strip().splitlines()[-1]
    with stack.imap() as imap:
        assert imap.login(address, password)[0] == "OK"


def test_add_mailbox_with_bad_address_says_why(stack: RunningStack) -> None:
    result = ddmail(stack, "stack", "add-mailbox", "--root", str(stack.root), "not an address")
    assert result.returncode != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_global_domain_add_list_disable(stack: RunningStack) -> None:
    domain = f"d{uuid.uuid4().hex[:6]}.test"
    added = ddmail(stack, "admin", "domain", "add", domain, "--root", str(stack.root))
    assert added.returncode == 0, added.stderr
    listed = ddmail(stack, "admin", "domain", "list", "--root", str(stack.root))
    assert f"{domain}\tenabled" in listed.stdout
    made = stack.client().call(
        "POST", "/v1/mailboxes", {"account": "test-account", "address": f"someone@{domain}"}
    )
    marker = uuid.uuid4().hex
    stack.deliver(str(made["address"]), "new domain", marker)
    wait_until(
        lambda: inbox_has(stack, str(made["address"]), str(made["password"]), marker),
        what="delivery on the new domain",
    )
    disabled = ddmail(stack, "admin", "domain", "disable", domain, "--root", str(stack.root))
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    with stack.smtp() as s, pytest.raises(smtplib.SMTPRecipientsRefused):
        s.sendmail("someone@example.org", [str(made["address"])], b"Subject: x\r\n\r\nx\r\n")


def test_disabled_account_answers_like_an_active_one_but_cannot_log_in(
    stack: RunningStack,
) -> None:
    import imaplib

    address, password = stack.new_mailbox()
    alias = stack.new_alias(address, prefix="al")
    while_off = uuid.uuid4().hex
    off = ddmail(stack, "admin", "account", "disable", "test-account", "--root", str(stack.root))
    assert off.returncode == 0, off.stderr
    try:
        # The same answers as for an active account (no 450 revealing the payment status).
        for rcpt in (address, alias):
            with stack.smtp() as s:
                s.ehlo()
                s.mail("someone@example.org")
                assert s.rcpt(rcpt)[0] == 250
                # A well-formed message (a bare one would rightly be filed into Junk).
                headers = (
                    f"From: someone@example.org\r\nTo: {rcpt}\r\nSubject: while disabled\r\n"
                    f"Date: {formatdate()}\r\nMessage-ID: {make_msgid()}\r\n"
                )
                assert s.data(f"{headers}\r\n{while_off}\r\n".encode())[0] == 250
        # A clean NO (not a dropped connection), and the connection stays usable.
        with stack.imap() as imap:
            with pytest.raises(imaplib.IMAP4.error) as refused:
                imap.login(address, password)
            assert "AUTHENTICATIONFAILED" in str(refused.value)
            assert imap.noop()[0] == "OK"
        with stack.smtps() as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as denied:
            smtp.login(address, password)
        assert denied.value.smtp_code == 535
    finally:
        on = ddmail(stack, "admin", "account", "enable", "test-account", "--root", str(stack.root))
        assert on.returncode == 0, on.stderr
    # Nothing was lost: what arrived while disabled is there once the account is enabled.
    wait_until(lambda: inbox_has(stack, address, password, while_off), what="mail kept")
    marker = uuid.uuid4().hex
    stack.deliver(address, "after enabling", marker)
    wait_until(lambda: inbox_has(stack, address, password, marker), what="delivery re-enabled")


def test_vouchers_and_audit_verification_from_the_command_line(stack: RunningStack) -> None:
    made = ddmail(stack, "admin", "vouchers", "create", "3", "5", "--root", str(stack.root))
    assert made.returncode == 0, made.stderr
    lines = made.stdout.split()
    assert len(lines) == 3 and len(set(lines)) == 3
    bad = ddmail(stack, "admin", "vouchers", "create", "3", "-5", "--root", str(stack.root))
    assert bad.returncode == 1 and "Give an amount" in bad.stderr
    ok = ddmail(stack, "admin", "audit", "verify", "test-account", "--root", str(stack.root))
    assert ok.returncode == 0 and "intact" in ok.stdout


def test_billing_run_acts_on_an_installed_config_as_the_timer_calls_it(
    stack: RunningStack,
) -> None:
    """The production timer runs `ddmail admin billing run --config FILE` (no stack root)."""
    config = stack.root / "etc" / "ddmail.toml"
    ran = ddmail(stack, "admin", "billing", "run", "--config", str(config))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("charged ")
    both = ddmail(stack, "admin", "billing", "run", "--config", str(config), "--root", "/x")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    neither = ddmail(stack, "admin", "billing", "run")
    assert neither.returncode == 2 and "one of the arguments --root --config" in neither.stderr


def test_dns_zone_prints_valid_records_for_the_stacks_global_domain(stack: RunningStack) -> None:
    made = ddmail(stack, "admin", "dns", "zone", "--root", str(stack.root))
    assert made.returncode == 0, made.stderr
    soa = ". 3600 IN SOA ns. host. 1 7200 3600 1209600 3600\n"
    zone = dns.zone.from_text(soa + made.stdout, origin=".", relativize=False, check_origin=False)
    domain = stack.info["global_domain"]
    mx = zone.get_rdataset(f"{domain}.", dns.rdatatype.MX)
    assert mx is not None and [r.to_text() for r in mx] == [f"10 mail.{domain}."]
    dmarc = zone.get_rdataset(f"_dmarc.{domain}.", dns.rdatatype.TXT)
    assert dmarc is not None and f"rua=mailto:dmarc@{domain}" in dmarc[0].to_text()
