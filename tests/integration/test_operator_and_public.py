"""Through the real stack: operator addresses are delivered (issue 8 item 10), published
addresses cannot be registered, and the public files name the stack's real host and ports
(item 19)."""

from __future__ import annotations

import http.client
import json
import uuid
import xml.etree.ElementTree as ET
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ddmail_common.errors import ApiError
from ddmail_stack.config_file import OPERATOR_ADDRESS
from tests.stackrun import TEST_ACCOUNT, RunningStack, wait_until


def sink_recipients(stack: RunningStack, marker: str) -> list[str] | None:
    """The envelope recipients of the sink's message carrying MARKER, or None (not there)."""
    for eml in Path(stack.info["sink_dir"]).glob("*.eml"):
        if marker.encode() in eml.read_bytes():
            meta = json.loads(eml.with_suffix(".json").read_text())
            return [str(r) for r in meta["rcpt_tos"]]
    return None


@pytest.mark.parametrize("local", ["postmaster", "abuse", "tlsrpt"])
def test_operator_addresses_are_accepted_and_reach_the_operator_mailbox(
    stack: RunningStack, local: str
) -> None:
    marker = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"] = "reporter@example.org", f"{local}@{stack.info['global_domain']}"
    msg["Subject"] = f"report {marker}"
    msg.set_content(marker)
    with stack.smtp() as smtp:
        smtp.ehlo("client.example.org")
        assert smtp.mail("reporter@example.org")[0] == 250
        code, reply = smtp.rcpt(msg["To"])
        assert code == 250, reply  # RFC 5321 4.5.1: postmaster must be accepted
        assert smtp.data(msg.as_bytes())[0] == 250
    found = wait_until(lambda: sink_recipients(stack, marker), what="operator mail in the sink")
    assert found == [OPERATOR_ADDRESS]


@pytest.mark.parametrize("local", ["tlsrpt", "dmarc", "mta-sts", "postmaster"])
def test_published_addresses_are_refused_as_mailbox_and_alias_on_the_stack(
    stack: RunningStack, local: str
) -> None:
    address = f"{local}@{stack.info['global_domain']}"
    for path, body in (
        ("/v1/mailboxes", {"account": TEST_ACCOUNT, "address": address}),
        ("/v1/aliases", {"account": TEST_ACCOUNT, "address": address, "destinations": [address]}),
    ):
        with pytest.raises(ApiError) as exc:
            stack.client().call("POST", path, body)
        assert exc.value.code == "reserved_address" and "is reserved" in exc.value.message


def _get(stack: RunningStack, path: str) -> bytes:
    url = urlsplit(stack.info["web_url"])
    conn = http.client.HTTPSConnection(url.hostname or "", url.port, context=stack.tls())
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, path
        return resp.read()
    finally:
        conn.close()


def test_autoconfig_and_help_name_the_stacks_real_host_and_ports(stack: RunningStack) -> None:
    root = ET.fromstring(_get(stack, "/.well-known/autoconfig/mail/config-v1.1.xml"))  # noqa: S314
    servers = [
        (s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in root.iter()
        if s.tag in ("incomingServer", "outgoingServer")
    ]
    info = stack.info
    assert servers == [
        ("localhost", str(info["imaps_port"]), "SSL"),
        ("localhost", str(info["smtps_port"]), "SSL"),
        ("localhost", str(info["submission_port"]), "STARTTLS"),
    ]
    help_page = _get(stack, "/help").decode()
    for port in ("imaps_port", "submission_port", "smtps_port"):
        assert str(info[port]) in help_page
    assert "<code>localhost</code>" in help_page
    # MTA-STS names the MX that Postfix answers as, not the name clients use locally.
    assert b"\r\nmx: mail.ddmail.test\r\n" in _get(stack, "/.well-known/mta-sts.txt")
