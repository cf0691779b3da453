"""OpenPGP on arrival through real Postfix → stage → Dovecot, read back over IMAPS and decrypted
with the recipient's private key in a separate GnuPG home."""

from __future__ import annotations

import email
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import gnupg
import pytest
import sqlalchemy as sa

from ddmail_keyhandler.pgpmime import encrypt_message
from tests.integration.test_mail_filtering import GTUBE_JUNK
from tests.integration.test_mail_flow import fetch_all, stored_files
from tests.stackrun import TEST_ACCOUNT, VENV_BIN, RunningStack, wait_until


@dataclass
class Recipient:
    address: str
    password: str
    public: bytes
    home: Path  # holds the private key: the test's "mail client"

    def decrypt(self, outer: bytes) -> bytes:
        message = email.message_from_bytes(outer)
        assert message.get_content_type() == "multipart/encrypted"
        armored = message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
        result = gnupg.GPG(gnupghome=str(self.home)).decrypt(armored)
        assert result.ok, result.status
        return bytes(result.data)


def run_gpg(home: Path, *args: str) -> bytes:
    gpg = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    done = subprocess.run(
        [*gpg, "--pinentry-mode", "loopback", *args], check=True, capture_output=True
    )
    return done.stdout


def export(home: Path) -> bytes:
    return bytes(gnupg.GPG(gnupghome=str(home)).export_keys(fingerprint_in(home)).encode())


def fingerprint_in(home: Path) -> str:
    return str(gnupg.GPG(gnupghome=str(home)).list_keys()[0]["fingerprint"])


def make_key(home: Path, uid: str, expire: str = "never", *when: str) -> bytes:
    """An ed25519 key with a cv25519 encryption subkey (made at WHEN, e.g. a faked time)."""
    home.mkdir(mode=0o700, parents=True)
    run_gpg(home, *when, "--quick-gen-key", uid, "ed25519", "sign", expire)
    run_gpg(home, *when, "--quick-add-key", fingerprint_in(home), "cv25519", "encr", expire)
    return export(home)


def activate(stack: RunningStack, address: str, public: bytes) -> str:
    client = stack.client()
    made = client.call(
        "POST", "/v1/openpgp/keys", {"account": TEST_ACCOUNT, "key": public.decode()}
    )
    client.call(
        "POST",
        "/v1/openpgp/activate",
        {"account": TEST_ACCOUNT, "address": address, "fingerprint": made["fingerprint"]},
    )
    return str(made["fingerprint"])


@pytest.fixture(autouse=True)
def no_agent_left(tmp_path: Path) -> Iterator[None]:
    """Stop the gpg-agents that key generation and decryption started in this test's homes."""
    yield
    for home in tmp_path.glob("*"):
        if (home / "pubring.kbx").exists():
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def new_recipient(stack: RunningStack, home: Path) -> Recipient:
    """A new mailbox with a new key activated for it, its private half in HOME."""
    address, password = stack.new_mailbox()
    public = make_key(home, f"Rcpt <{address}>")
    activate(stack, address, public)
    return Recipient(address, password, public, home)


@pytest.fixture
def recipient(stack: RunningStack, tmp_path: Path) -> Recipient:
    return new_recipient(stack, tmp_path / "gpg")


def send_raw(stack: RunningStack, sender: str, recipients: list[str], raw: bytes) -> None:
    with stack.smtp() as s:
        s.sendmail(sender, recipients, raw, mail_options=["BODY=8BITMIME"])


def body_of(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        if sep in raw:
            return raw.split(sep, 1)[1]
    return b""


def newest(stack: RunningStack, who: Recipient, marker: str) -> bytes:
    """The stored message with MARKER, in the inbox or in Junk: where rspamd's score files it
    is not what these tests are about (short 8-bit texts score R_MIXED_CHARSET)."""

    def find() -> bytes | None:
        for folder in ("INBOX", "Junk"):
            for message in fetch_all(stack, who.address, who.password, folder):
                if marker.encode() in message:
                    return message
        return None

    return wait_until(find, 30, "the message over IMAPS")  # type: ignore[no-any-return]


def message(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


def plain_message(to: list[str], subject: str, body: bytes, marker: str) -> bytes:
    """From a@example.org to TO; its Message-ID carries MARKER (kept in the clear, so newest()
    finds the message by it even once encrypted)."""
    return message(
        f"From: a@example.org\nTo: {', '.join(to)}\nSubject: {subject}\n"
        f"Date: {formatdate()}\nMessage-ID: <{marker}@example.org>\n",
        body,
    )


def send_plain(stack: RunningStack, to: list[str], subject: str, body: bytes, marker: str) -> None:
    send_raw(stack, "a@example.org", to, plain_message(to, subject, body, marker))


CASES = {
    "plain": ("Content-Type: text/plain; charset=us-ascii\n", b"Hello there.\r\n"),
    "utf8": (
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n",
        "Grüße, 你好, emoji 🎉\r\n".encode(),
    ),
    "latin1": (
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n",
        "Café à Noël, déjà vu\r\n".encode("latin-1"),
    ),
    "mentions": (
        "Content-Type: text/plain\n",
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"\r\n'
        b"-----BEGIN PGP MESSAGE-----\r\nnot really\r\n",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_messages_are_stored_encrypted_and_decrypt_byte_exactly(
    stack: RunningStack, recipient: Recipient, case: str
) -> None:
    content_headers, body = CASES[case]
    marker = uuid.uuid4().hex
    raw = message(
        f"From: Sender <sender@example.org>\nTo: {recipient.address}\n"
        f"Subject: secret subject {marker}\nMessage-ID: <{marker}@example.org>\n"
        f"In-Reply-To: <parent-{marker}@example.org>\n"
        f"Date: {formatdate()}\nMIME-Version: 1.0\n" + content_headers,
        body,
    )
    send_raw(stack, "sender@example.org", [recipient.address], raw)
    stored = newest(stack, recipient, marker)  # the marker is in the kept Message-ID
    outer = email.message_from_bytes(stored)
    assert outer["Subject"] == "..."
    assert outer["Message-ID"] == f"<{marker}@example.org>"
    assert outer["In-Reply-To"] == f"<parent-{marker}@example.org>"
    assert f"secret subject {marker}".encode() not in stored
    inner = recipient.decrypt(stored)
    assert body_of(inner) == body
    assert f"Subject: secret subject {marker}".encode() in inner
    assert all(f.startswith(b"CRYPTED") for f in stored_files(stack, recipient.address))


def test_binary_attachment_survives(stack: RunningStack, recipient: Recipient) -> None:
    marker = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", recipient.address, "attachment"
    msg["Message-ID"] = f"<{marker}@example.org>"
    msg.set_content("see attached")
    blob = os.urandom(50_000)
    msg.add_attachment(blob, maintype="application", subtype="octet-stream", filename="x.bin")
    raw = msg.as_bytes()
    send_raw(stack, "a@example.org", [recipient.address], raw)
    inner = recipient.decrypt(newest(stack, recipient, marker))
    part = next(p for p in email.message_from_bytes(inner).walk() if p.get_filename() == "x.bin")
    assert part.get_payload(decode=True) == blob


def test_null_idn_and_unusual_senders_are_accepted(
    stack: RunningStack, recipient: Recipient
) -> None:
    unusual = "o'brien+x&y{z}|~!#%*?^" + "l" * 42 + "@example.org"  # 64-octet local part
    for sender in ("", "bücher@bücher.example", unusual):
        marker = uuid.uuid4().hex
        raw = message(
            f"From: x@example.org\nTo: {recipient.address}\nSubject: dsn\n"
            f"Message-ID: <{marker}@example.org>\n",
            b"bounce\r\n",
        )
        with stack.smtp() as s:
            options = ["SMTPUTF8"] if sender else []
            s.sendmail(sender, [recipient.address], raw, mail_options=options)
        assert recipient.decrypt(newest(stack, recipient, marker))


def test_genuine_pgp_mime_is_not_wrapped_twice(stack: RunningStack, recipient: Recipient) -> None:
    marker = uuid.uuid4().hex
    original = plain_message([recipient.address], "pre", b"already private\r\n", marker)
    pre = encrypt_message(original, recipient.public)
    send_raw(stack, "a@example.org", [recipient.address], pre)
    stored = newest(stack, recipient, marker)
    assert body_of(recipient.decrypt(stored)) == b"already private\r\n"


def test_two_recipients_only_one_with_a_key(stack: RunningStack, recipient: Recipient) -> None:
    other, other_password = stack.new_mailbox()
    marker = uuid.uuid4().hex
    send_plain(stack, [recipient.address, other], "both", f"body {marker}\r\n".encode(), marker)
    assert recipient.decrypt(newest(stack, recipient, marker))
    plain = wait_until(
        lambda: [m for m in fetch_all(stack, other, other_password) if marker.encode() in m],
        30,
        "plain copy",
    )
    assert f"body {marker}".encode() in plain[0]


def stop_stage(stack: RunningStack) -> None:
    stack.stop_service("pgpstage", stack.root / "run" / "pgpstage.sock")


def start_stage(stack: RunningStack) -> None:
    stack.start_service("pgpstage", stack.root / "run" / "pgpstage.sock")


def test_stage_down_keeps_mail_queued_then_delivers_encrypted(
    stack: RunningStack, recipient: Recipient
) -> None:
    stop_stage(stack)
    try:
        marker = uuid.uuid4().hex
        send_plain(stack, [recipient.address], "queued", b"wait for me\r\n", marker)
        wait_until(lambda: stack.deferred(recipient.address), 60, "deferred in the queue")
        assert not stored_files(stack, recipient.address)
    finally:
        start_stage(stack)
    stack.flush_queue()
    assert body_of(recipient.decrypt(newest(stack, recipient, marker))) == b"wait for me\r\n"


def test_expired_key_defers_until_a_valid_key_is_active(
    stack: RunningStack, tmp_path: Path
) -> None:
    address, password = stack.new_mailbox()
    short = make_key(tmp_path / "short", f"Short <{address}>", "seconds=4")
    activate(stack, address, short)
    time.sleep(5)
    marker = uuid.uuid4().hex
    send_plain(stack, [address], f"late {marker}", b"must not be plain\r\n", marker)

    def owner_told() -> bool:
        # The key page (through the backend, as the panel shows it) says mail is held back.
        keys = stack.client().call("GET", f"/v1/openpgp/keys?account={TEST_ACCOUNT}")["keys"]
        return any(address in k["failures"] for k in keys)

    wait_until(owner_told, 30, "the failure on the key page")
    wait_until(lambda: stack.deferred(address), 60, "deferred in the queue")
    assert not stored_files(stack, address)
    # The panel's periodic job puts it in the account's audit trail.
    ran = subprocess.run(
        [str(VENV_BIN / "ddmail"), "admin", "billing", "run", "--root", str(stack.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    engine = sa.create_engine(stack.info["db_url"])
    with engine.connect() as conn:
        held = conn.execute(
            sa.text(
                "SELECT object FROM web_audit WHERE account = :a AND "
                "action = 'openpgp_delivery_held'"
            ),
            {"a": TEST_ACCOUNT},
        )
        assert any(address in str(row[0]) for row in held)
    engine.dispose()
    fresh = Recipient(
        address, password, make_key(tmp_path / "fresh", f"F <{address}>"), tmp_path / "fresh"
    )
    activate(stack, address, fresh.public)
    stack.flush_queue()
    assert body_of(fresh.decrypt(newest(stack, fresh, marker))) == b"must not be plain\r\n"
    listed = stack.client().call("GET", f"/v1/openpgp/keys?account={TEST_ACCOUNT}")["keys"]
    assert not any(address in k["failures"] for k in listed)


def wkd_urls(stack: RunningStack, address: str) -> list[str]:
    """The advanced and the direct WKD address of ADDRESS's key on the stack's panel."""
    from ddmail_keyhandler.wkd import wkd_hash

    local, _, domain = address.partition("@")
    hashed = wkd_hash(local)
    base = f"{stack.info['web_url']}/.well-known/openpgpkey"
    return [f"{base}/{domain}/hu/{hashed}?l={local}", f"{base}/hu/{hashed}?l={local}"]


def scratch_gpg(parent: Path) -> gnupg.GPG:
    """A new, empty GnuPG home under PARENT: a reader of what WKD serves."""
    scratch = parent / f"wkd-{uuid.uuid4().hex[:6]}"
    scratch.mkdir(mode=0o700)
    return gnupg.GPG(gnupghome=str(scratch))


def test_wkd_publishes_the_active_key_and_deactivation_removes_it(
    stack: RunningStack, recipient: Recipient
) -> None:
    import urllib.error
    import urllib.request

    urls = wkd_urls(stack, recipient.address)
    expected = gnupg.GPG(gnupghome=str(recipient.home)).list_keys()[0]["fingerprint"]
    for url in urls:
        with urllib.request.urlopen(url, context=stack.tls()) as resp:
            assert resp.headers["Content-Type"] == "application/octet-stream"
            served = resp.read()
        assert not served.startswith(b"-----")  # WKD serves the binary key
        imported = scratch_gpg(recipient.home.parent).import_keys(served)
        assert imported.fingerprints == [expected]
    stack.client().call(
        "POST", "/v1/openpgp/deactivate", {"account": TEST_ACCOUNT, "address": recipient.address}
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(urls[0], context=stack.tls())
    assert exc.value.code == 404


def test_owner_is_warned_by_mail_before_the_key_expires(
    stack: RunningStack, tmp_path: Path
) -> None:
    address, password = stack.new_mailbox()
    soon = Recipient(
        address, password, make_key(tmp_path / "soon", f"S <{address}>", "10d"), tmp_path / "soon"
    )
    activate(stack, address, soon.public)
    stop_stage(stack)
    start_stage(stack)  # the stage checks expiries when it starts, then hourly

    def notices() -> list[bytes]:
        return [m for m in fetch_all(stack, address, password) if b"multipart/encrypted" in m]

    found = wait_until(notices, 30, "the expiry notice")
    inner = soon.decrypt(found[0])
    assert b"Subject: Your OpenPGP key expires on" in inner
    stop_stage(stack)
    start_stage(stack)
    time.sleep(2)
    assert len(notices()) == 1  # once per expiry date


def test_wkd_publishes_only_the_user_id_of_the_mailbox_through_the_stack(
    stack: RunningStack, tmp_path: Path
) -> None:
    import urllib.request

    address, _ = stack.new_mailbox()
    home = tmp_path / "uids"
    make_key(home, f"Real Name <{address}>")
    run_gpg(home, "--quick-add-uid", fingerprint_in(home), "Other <other@elsewhere.example>")
    run_gpg(home, "--quick-add-uid", fingerprint_in(home), "Just A Name")
    activate(stack, address, export(home))
    for url in wkd_urls(stack, address):
        with urllib.request.urlopen(url, context=stack.tls()) as resp:
            served = resp.read()
        reader = scratch_gpg(tmp_path)
        assert reader.import_keys(served).fingerprints == [fingerprint_in(home)]
        [listed] = reader.list_keys()
        assert listed["uids"] == [f"Real Name <{address}>"]


def test_a_refreshed_key_uploaded_again_is_updated_and_mail_keeps_flowing(
    stack: RunningStack, tmp_path: Path
) -> None:
    address, password = stack.new_mailbox()
    home = tmp_path / "refresh"
    lifetime = 10
    made_at = time.time()
    fingerprint = activate(stack, address, make_key(home, f"R <{address}>", f"seconds={lifetime}"))
    # The owner extends the key (primary and subkey) and uploads it again.
    run_gpg(home, "--quick-set-expire", fingerprint, "1y")
    run_gpg(home, "--quick-set-expire", fingerprint, "1y", "*")
    client = stack.client()
    updated = client.call(
        "POST", "/v1/openpgp/keys", {"account": TEST_ACCOUNT, "key": export(home).decode()}
    )
    assert updated["updated"] is True and updated["changed"] is True
    assert updated["mailboxes"] == [address]
    listed = client.call("GET", f"/v1/openpgp/keys?account={TEST_ACCOUNT}")["keys"]
    [key] = [k for k in listed if k["fingerprint"] == fingerprint]
    assert key["mailboxes"] == [address] and key["expires_at"] > time.time() + 300 * 86400
    # Once the first expiry has passed, mail is still delivered: encrypted to the updated key.
    time.sleep(max(0.0, made_at + lifetime + 1 - time.time()))
    marker = uuid.uuid4().hex
    send_plain(stack, [address], f"after {marker}", b"still private\r\n", marker)
    owner = Recipient(address, password, export(home), home)
    assert body_of(owner.decrypt(newest(stack, owner, marker))) == b"still private\r\n"


def test_delivery_encrypts_only_to_the_strong_subkey_never_a_newer_weak_one(
    stack: RunningStack, tmp_path: Path
) -> None:
    address, password = stack.new_mailbox()
    home = tmp_path / "mixed"
    make_key(home, f"M <{address}>", "never", "--faked-system-time=20240101T000000")
    run_gpg(home, "--quick-add-key", fingerprint_in(home), "rsa1024", "encr", "never")
    subkeys = [
        line.split(":")
        for line in run_gpg(home, "--with-colons", "--list-keys").decode().splitlines()
        if line.startswith("sub:")
    ]
    strong = next(row[4] for row in subkeys if row[3] == "18")  # cv25519 (ECDH)
    weak = next(row[4] for row in subkeys if row[3] == "1")  # RSA-1024, the newer one
    activate(stack, address, export(home))  # accepted: it has a strong encryption subkey
    marker = uuid.uuid4().hex
    send_plain(stack, [address], f"s {marker}", b"for the strong key only\r\n", marker)
    owner = Recipient(address, password, export(home), home)
    stored = newest(stack, owner, marker)
    armored = email.message_from_bytes(stored).get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
    scratch = tmp_path / "packets"
    scratch.mkdir(mode=0o700)
    listed = subprocess.run(
        ["gpg", "--homedir", str(scratch), "--batch", "--list-packets"],
        input=armored,
        capture_output=True,
        check=False,
    ).stdout.decode()
    assert re.findall(r":pubkey enc packet: .*keyid ([0-9A-F]{16})", listed) == [strong]
    assert weak not in listed
    assert body_of(owner.decrypt(stored)) == b"for the strong key only\r\n"


def test_spam_for_an_openpgp_mailbox_is_filed_into_junk_and_still_encrypted(
    stack: RunningStack, recipient: Recipient
) -> None:
    """rspamd scores the clear text before the stage encrypts; its X-Spam stays outside the
    encryption, so the Sieve script files the encrypted message into Junk."""
    marker = uuid.uuid4().hex
    send_plain(stack, [recipient.address], "offer", f"{GTUBE_JUNK}\r\n".encode(), marker)
    stored = wait_until(
        lambda: [
            m
            for m in fetch_all(stack, recipient.address, recipient.password, "Junk")
            if marker.encode() in m
        ],
        30,
        "the message in Junk",
    )[0]
    outer = email.message_from_bytes(stored)
    assert outer["X-Spam"] == "Yes"
    assert outer.get_content_type() == "multipart/encrypted"
    assert GTUBE_JUNK.encode() not in stored
    assert GTUBE_JUNK.encode() in recipient.decrypt(stored)
    assert not any(
        marker.encode() in m for m in fetch_all(stack, recipient.address, recipient.password)
    )
