"""The operator's and the tinkerer's commands against a running stack."""

from __future__ import annotations

import smtplib
import subprocess
import uuid

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
