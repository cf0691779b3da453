"""The operator's mailbox quota (`[public] mailbox_quota_mb`, `ddmail stack up
--mailbox-quota-mb`): Dovecot enforces the value the mailboxes page states, a full mailbox
defers mail instead of bouncing it, and mail waiting in the queue comes in once its owner has
made room."""

from __future__ import annotations

import base64
import os
import re
import uuid
from email.message import EmailMessage

import pytest

from ddmail_stack.config_file import load
from ddmail_stack.layout import StackLayout
from tests.stackrun import RunningStack, own_stack, wait_until

pytestmark = pytest.mark.integration


def big_message(to: str, marker: str) -> EmailMessage:
    """About 600 KiB: one fits a 1 MiB mailbox, two do not."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.org", to, f"big {marker}"
    msg.set_content(marker + "\n" + base64.encodebytes(os.urandom(450 * 1024)).decode())
    return msg


def quota(stack: RunningStack, address: str, password: str) -> tuple[int, int]:
    """(KiB used, KiB allowed) as a mail program asks for them (IMAP GETQUOTAROOT)."""
    with stack.imap() as imap:
        imap.login(address, password)
        _, answer = imap.getquotaroot("INBOX")
    found = re.search(rb"\(STORAGE (\d+) (\d+)\)", b" ".join(answer[1]))  # type: ignore[arg-type]
    assert found, answer
    return int(found.group(1)), int(found.group(2))


def inbox_count(stack: RunningStack, address: str, password: str) -> int:
    with stack.imap() as imap:
        imap.login(address, password)
        _, data = imap.select("INBOX")
        return int(data[0] or 0)


def test_a_full_mailbox_defers_mail_until_its_owner_makes_room() -> None:
    with own_stack("--mailbox-quota-mb", "1") as stack:
        # The one value: what the pages read is what Dovecot was rendered with.
        assert stack.info["mailbox_quota_mb"] == 1
        assert load(StackLayout.load(stack.root)).public.mailbox_quota_mb == 1
        address, password = stack.new_mailbox()
        assert quota(stack, address, password) == (0, 1024)

        first, second = uuid.uuid4().hex, uuid.uuid4().hex
        with stack.smtp() as s:
            s.send_message(big_message(address, first))
        wait_until(lambda: inbox_count(stack, address, password) == 1, what="the first message")
        with stack.smtp() as s:
            s.send_message(big_message(address, second))  # accepted: the queue keeps it
        wait_until(lambda: stack.deferred(address), what="the second message deferred")
        reasons = " ".join(str(q.get("recipients")) for q in stack.postqueue())
        assert "Quota exceeded" in reasons and "452 4.2.2" in reasons
        assert inbox_count(stack, address, password) == 1
        assert not stack.sink_files(second)  # no bounce went back to the sender

        # The owner deletes the first message; the queue's next try delivers the second.
        with stack.imap() as imap:
            imap.login(address, password)
            imap.select("INBOX")
            imap.store("1", "+FLAGS", "\\Deleted")
            imap.expunge()
        stack.flush_queue()

        def second_arrived() -> bool:
            with stack.imap() as imap:
                imap.login(address, password)
                imap.select("INBOX", readonly=True)
                return bool(imap.search(None, "SUBJECT", second)[1][0])

        wait_until(second_arrived, what="the deferred message after room was made")
        assert not stack.postqueue()
        used, allowed = quota(stack, address, password)
        assert 500 < used < allowed == 1024
