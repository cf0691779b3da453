"""PGP/MIME encryption on arrival (keyhandler), with real gpg: keys are made once per module in
a throwaway GnuPG home, which is also where results are decrypted, so decryption never uses a
home of the code under test. Keys already expired are made with gpg's faked system time."""

from __future__ import annotations

import base64
import email.header
import email.policy
import quopri
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddmail_keyhandler import pgpmime
from ddmail_keyhandler.pgpmime import EncryptionError, encrypt_message, is_already_encrypted

PAST = "--faked-system-time=20200101T000000"
LOOPBACK = ["--pinentry-mode", "loopback", "--passphrase", ""]


@dataclass(frozen=True)
class Keys:
    home: str  # holds the secret keys
    public: bytes  # ed25519 + cv25519 encryption subkey, armored
    fingerprint: str
    keyid: str  # of the encryption subkey
    other: bytes  # a second good key
    other_keyid: str
    expiring: bytes  # good for two more years
    expired: bytes  # made in 2020 with a one-day expiry
    sign_only: bytes
    revoked: bytes
    secret: bytes  # the recipient's secret key, armored


def gpg(home: str, *args: str, data: bytes = b"") -> bytes:
    return subprocess.run(
        ["gpg", "--homedir", home, "--batch", "--no-tty", *LOOPBACK, *args],
        input=data,
        capture_output=True,
        check=True,
    ).stdout


def make_key(home: str, uid: str, usage: str, expiry: str, *extra: str) -> str:
    status = gpg(home, "--status-fd", "1", *extra, "--quick-gen-key", uid, "ed25519", usage, expiry)
    match = re.search(rb"KEY_CREATED \w ([0-9A-F]{40})", status)
    assert match, status
    return match[1].decode()


def subkey_id(home: str, fingerprint: str) -> str:
    listing = gpg(home, "--with-colons", "--list-keys", fingerprint).decode()
    return next(line.split(":")[4] for line in listing.splitlines() if line.startswith("sub:"))


def make_encryption_key(home: str, uid: str, expiry: str = "never", *extra: str) -> str:
    fingerprint = make_key(home, uid, "default", expiry, *extra)
    gpg(home, *extra, "--quick-add-key", fingerprint, "cv25519", "encr", expiry)
    return fingerprint


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:  # a short socket path
        fingerprint = make_encryption_key(home, "Rcpt <rcpt@example.org>")
        other = make_encryption_key(home, "Other <other@example.org>")
        expiring = make_encryption_key(home, "Expiring <soon@example.org>", "2y")
        expired = make_encryption_key(home, "Old <old@example.org>", "1d", PAST)
        sign_only = make_key(home, "Sign <sign@example.org>", "sign", "never")
        revoked = make_encryption_key(home, "Revoked <revoked@example.org>")
        # gpg stored a revocation certificate, with its first line disarmed by a colon.
        certificate = Path(home, "openpgp-revocs.d", f"{revoked}.rev").read_bytes()
        gpg(home, "--import", data=certificate.replace(b":-----BEGIN", b"-----BEGIN"))
        yield Keys(
            home=home,
            public=gpg(home, "--armor", "--export", fingerprint),
            fingerprint=fingerprint,
            keyid=subkey_id(home, fingerprint),
            other=gpg(home, "--armor", "--export", other),
            other_keyid=subkey_id(home, other),
            expiring=gpg(home, "--armor", "--export", expiring),
            expired=gpg(home, "--armor", "--export", expired),
            sign_only=gpg(home, "--armor", "--export", sign_only),
            revoked=gpg(home, "--armor", "--export", revoked),
            secret=gpg(home, "--armor", "--export-secret-keys", fingerprint),
        )
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)


def crlf(text: str) -> bytes:
    return text.encode().replace(b"\n", b"\r\n")


HEADERS = crlf(
    "Return-Path: <alice@example.com>\n"
    "Received: from mx.example.com (mx.example.com [192.0.2.1])\n"
    "\tby mail.example.org (Postfix) with ESMTPS id 4ABC\n"
    "\tfor <rcpt@example.org>; Mon, 1 Jan 2024 10:00:00 +0000 (UTC)\n"
    "DKIM-Signature: v=1; a=ed25519-sha256; d=example.com; s=sel;\n"
    " h=from:to:subject:date; bh=AAAA; b=BBBB\n"
    "From: Alice <alice@example.com>\n"
    "To: Rcpt <rcpt@example.org>\n"
    "Cc: Carol <carol@example.net>\n"
    "Subject: SECRET-SUBJECT about the\n"
    " merger\n"
    "Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
    "Message-ID: <m1@example.com>\n"
    "In-Reply-To: <m0@example.com>\n"
    "References: <m-1@example.com>\n"
    " <m0@example.com>\n"
    "Reply-To: Alice <reply@example.com>\n"
    "Thread-Topic: SECRET-SUBJECT about the merger\n"
    "X-Mailer: Test\n"
    "MIME-Version: 1.0\n"
)
PLAIN = HEADERS + crlf(
    "Content-Type: text/plain; charset=us-ascii\n"
    "Content-Transfer-Encoding: 7bit\n"
    "\n"
    "SECRET-BODY: meet at noon.\n"
    "-- \n"
    "Alice\n"
)


def split(data: bytes, eol: bytes = b"\r\n") -> tuple[bytes, bytes]:
    header, body = data.split(eol + eol, 1)
    return header + eol, body


def encrypted_payload(outer: bytes) -> bytes:
    """Check the RFC 3156 structure with Python's parser; return the armored ciphertext."""
    message = BytesParser(policy=email.policy.default).parsebytes(outer)
    assert message.get_content_type() == "multipart/encrypted"
    assert message.get_param("protocol") == "application/pgp-encrypted"
    control, encrypted = message.get_payload()
    assert control.get_content_type() == "application/pgp-encrypted"
    assert control["Content-Description"] == "PGP/MIME version identification"
    assert control.get_payload(decode=True).strip() == b"Version: 1"
    assert encrypted.get_content_type() == "application/octet-stream"
    assert encrypted.get_filename() == "encrypted.asc"
    assert encrypted.get_content_disposition() == "inline"
    assert encrypted["Content-Description"] == "OpenPGP encrypted message"
    payload = encrypted.get_payload(decode=True)
    assert payload.startswith(b"-----BEGIN PGP MESSAGE-----")
    return payload


def decrypt(keys: Keys, outer: bytes) -> bytes:
    return gpg(keys.home, "--decrypt", data=encrypted_payload(outer))


def roundtrip(keys: Keys, raw: bytes, eol: bytes = b"\r\n") -> tuple[bytes, bytes, bytes]:
    """Encrypt RAW; return the outer header block, the inner header block and inner body."""
    outer = encrypt_message(raw, keys.public)
    assert is_already_encrypted(outer)
    inner_headers, inner_body = split(decrypt(keys, outer), eol)
    return split(outer, eol)[0], inner_headers, inner_body


def fields(header_block: bytes) -> list[bytes]:
    """Header fields, each with its folded lines."""
    return re.findall(rb"[^ \t\r\n][^\n]*\n(?:[ \t][^\n]*\n)*", header_block)


def test_plain_ascii(keys: Keys) -> None:
    outer, inner, body = roundtrip(keys, PLAIN)
    assert body == split(PLAIN)[1]
    assert b"SECRET" not in outer
    assert b'Content-Type: text/plain; charset=us-ascii;\r\n protected-headers="v1"\r\n' in inner
    assert b"Content-Transfer-Encoding: 7bit\r\n" in inner


def test_outer_headers(keys: Keys) -> None:
    outer, _, _ = roundtrip(keys, PLAIN)
    expected = [
        b"Subject: ...\r\n" if f.startswith(b"Subject:") else f
        for f in fields(split(PLAIN)[0])
        if not f.startswith((b"Thread-Topic:", b"MIME-Version:", b"Content-"))
    ]
    outer_fields = fields(outer)
    # Routing, threading and authentication fields: byte for byte and in order.
    assert outer_fields[: len(expected)] == expected
    assert sum(f.lower().startswith(b"subject:") for f in outer_fields) == 1
    assert sum(f.lower().startswith(b"mime-version:") for f in outer_fields) == 1
    assert b"MIME-Version: 1.0\r\n" in outer_fields
    assert not any(f.lower().startswith(b"thread-topic:") for f in outer_fields)
    for name in (b"date", b"message-id", b"in-reply-to", b"references", b"from", b"to", b"cc"):
        assert sum(f.lower().startswith(name + b":") for f in outer_fields) == 1
    content = [f for f in outer_fields if f.lower().startswith(b"content-")]
    assert len(content) == 1
    assert content[0].startswith(
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
    )


def test_protected_headers_inside(keys: Keys) -> None:
    _, inner, _ = roundtrip(keys, PLAIN)
    inner_fields = fields(inner)
    original = fields(split(PLAIN)[0])
    names = (b"subject:", b"from:", b"to:", b"cc:", b"date:", b"message-id:", b"reply-to:")
    names += (b"in-reply-to:", b"references:", b"thread-topic:")
    for item in original:
        if item.lower().startswith(names):
            assert item in inner_fields
    assert not any(
        f.lower().startswith((b"received:", b"dkim-", b"return-path:")) for f in inner_fields
    )
    parsed = BytesParser(policy=email.policy.default).parsebytes(inner)
    assert parsed["Subject"] == "SECRET-SUBJECT about the merger"
    assert parsed.get_param("protected-headers") == "v1"


def test_utf8_body_and_encoded_word_subject(keys: Keys) -> None:
    subject = "Grüße, 日本語 and emoji 🎉"
    encoded = email.header.Header(subject, "utf-8").encode().encode()
    body = "Hallo Jürgen, ça va? 日本語 🎉\n".encode().replace(b"\n", b"\r\n") * 3
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\nTo: rcpt@example.org\r\n"
        b"Subject: " + encoded + b"\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    )
    outer, inner, inner_body = roundtrip(keys, raw)
    assert inner_body == body
    assert b"Subject: ...\r\n" in outer
    assert BytesParser(policy=email.policy.default).parsebytes(inner)["Subject"] == subject


def test_raw_utf8_header(keys: Keys) -> None:
    raw = "From: Jürgen <jürgen@bücher.example>\r\nSubject: Grüße\r\n\r\nbody\r\n".encode()
    outer, inner, body = roundtrip(keys, raw)
    assert "From: Jürgen <jürgen@bücher.example>\r\n".encode() in outer
    assert "Subject: Grüße\r\n".encode() in inner
    assert body == b"body\r\n"


def test_latin1_8bit_body(keys: Keys) -> None:
    body = "Café, crème brûlée, Müller, naïve — 100 €?\r\n".encode("cp1252") * 4
    assert b"\xe9" in body and b"\x80" in body
    raw = (
        b"From: a@example.com\r\nSubject: caf\xe9\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    )
    _, inner, inner_body = roundtrip(keys, raw)
    assert inner_body == body
    assert b"Subject: caf\xe9\r\n" in inner
    assert b"Content-Transfer-Encoding: 8bit\r\n" in inner


def test_multipart_with_binary_attachment(keys: Keys) -> None:
    attachment = bytes(range(256)) * 40
    body = (
        b"This is a multi-part message in MIME format.\r\n"
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
        b'--b1\r\nContent-Type: application/octet-stream; name="blob.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="blob.bin"\r\n\r\n'
        + base64.encodebytes(attachment).replace(b"\n", b"\r\n")
        + b"--b1--\r\n"
    )
    raw = (
        b"From: a@example.com\r\nTo: rcpt@example.org\r\nSubject: file\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed;\r\n boundary="b1"\r\n\r\n' + body
    )
    _, inner, inner_body = roundtrip(keys, raw)
    assert inner_body == body
    assert (
        b'Content-Type: multipart/mixed;\r\n boundary="b1";\r\n protected-headers="v1"\r\n' in inner
    )
    part = BytesParser(policy=email.policy.default).parsebytes(inner + inner_body)
    attached = [p for p in part.iter_attachments()]
    assert attached[0].get_payload(decode=True) == attachment


def test_lf_only_input(keys: Keys) -> None:
    raw = PLAIN.replace(b"\r\n", b"\n")
    outer = encrypt_message(raw, keys.public)
    assert b"\r" not in outer
    inner_headers, inner_body = split(decrypt(keys, outer), b"\n")
    assert inner_body == split(raw, b"\n")[1]
    assert b"\r" not in inner_headers
    assert b"Subject: ...\n" in outer


def test_crlf_input(keys: Keys) -> None:
    outer = encrypt_message(PLAIN, keys.public)
    assert outer.count(b"\n") == outer.count(b"\r\n")
    assert outer.endswith(b"--\r\n")


def test_missing_content_type_gets_default(keys: Keys) -> None:
    raw = b"From: a@example.com\nSubject: hi\n\nplain words\n"
    _, inner, body = roundtrip(keys, raw, b"\n")
    assert inner.startswith(b'Content-Type: text/plain; protected-headers="v1"\n')
    assert body == b"plain words\n"


def test_headers_only_message(keys: Keys) -> None:
    raw = b"From: a@example.com\r\nSubject: nothing else"
    outer, inner, body = roundtrip(keys, raw)
    assert body == b""
    assert b"Subject: nothing else\r\n" in inner
    assert b"Subject: ...\r\n" in outer


def test_null_sender_bounce(keys: Keys) -> None:
    raw = crlf(
        "Return-Path: <>\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\n"
        "To: rcpt@example.org\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n'
        "\n"
        "--r\nContent-Type: text/plain\n\nThe mail system could not deliver it.\n"
        "--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n"
        "--r--\n"
    )
    outer, _, body = roundtrip(keys, raw)
    assert outer.startswith(b"Return-Path: <>\r\n")
    assert body == split(raw)[1]


@pytest.mark.parametrize(
    "sender",
    ["user@xn--bcher-kva.example", "user@bücher.example", "first--last&o'neil/x@example.com"],
)
def test_idn_and_unusual_senders(keys: Keys, sender: str) -> None:
    raw = f"Return-Path: <{sender}>\r\nFrom: <{sender}>\r\nSubject: hi\r\n\r\nbody\r\n".encode()
    outer, inner, body = roundtrip(keys, raw)
    assert f"Return-Path: <{sender}>\r\nFrom: <{sender}>\r\n".encode() in outer
    assert f"From: <{sender}>\r\n".encode() in inner
    assert body == b"body\r\n"


# -- already encrypted? ----------------------------------------------------------------------


def test_body_mentioning_multipart_encrypted_is_not_encrypted(keys: Keys) -> None:
    raw = crlf(
        "From: a@example.com\nSubject: how PGP/MIME works\nMIME-Version: 1.0\n"
        "Content-Type: text/plain\n\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"\n'
        "Content-Type: application/pgp-encrypted\n"
    )
    assert not is_already_encrypted(raw)
    _, _, body = roundtrip(keys, raw)
    assert body == split(raw)[1]


def test_own_output_is_encrypted_and_not_wrapped_again(keys: Keys) -> None:
    for raw in (PLAIN, PLAIN.replace(b"\r\n", b"\n")):
        assert not is_already_encrypted(raw)
        assert is_already_encrypted(encrypt_message(raw, keys.public))


def test_protocol_parameter_is_parsed(keys: Keys) -> None:
    outer = encrypt_message(PLAIN, keys.public)
    declared = b'multipart/encrypted; protocol="application/pgp-encrypted";'
    for variant in (
        b"Multipart/Encrypted; PROTOCOL=Application/PGP-Encrypted;",
        b"multipart/encrypted; protocol*=us-ascii''application%2Fpgp-encrypted;",
        b"multipart/encrypted; protocol*0=application/; protocol*1=pgp-encrypted;",
        b'multipart/encrypted;\r\n\tprotocol = "application/pgp-encrypted" ;',
    ):
        assert is_already_encrypted(outer.replace(declared, variant))
    for other in (
        b'multipart/encrypted; protocol="application/pkcs7-mime";',
        b"multipart/encrypted;",
        b'multipart/mixed; protocol="application/pgp-encrypted";',
    ):
        assert not is_already_encrypted(outer.replace(declared, other))


def inline(keys: Keys, text: bytes) -> bytes:
    return gpg(keys.home, "--trust-model", "always", "-a", "-e", "-r", keys.fingerprint, data=text)


def test_inline_pgp_message(keys: Keys) -> None:
    armor = inline(keys, b"secret")
    head = b"From: a@example.com\r\nSubject: x\r\n"
    assert is_already_encrypted(head + b"\r\n\r\n  " + armor.replace(b"\n", b"\r\n") + b"\r\n\r\n")
    assert is_already_encrypted(head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + armor)
    b64 = base64.encodebytes(armor)
    assert is_already_encrypted(head + b"Content-Transfer-Encoding: base64\r\n\r\n" + b64)
    qp = quopri.encodestring(armor.replace(b"\n", b" \n"))
    assert is_already_encrypted(head + b"Content-Transfer-Encoding: Quoted-Printable\n\n" + qp)


def test_not_inline_pgp(keys: Keys) -> None:
    armor = inline(keys, b"secret")
    head = b"From: a@example.com\nSubject: x\n"
    signed_only = gpg(keys.home, "-a", "-s", "-u", keys.fingerprint, data=b"readable")
    for raw in (
        head + b"\nSee below:\n" + armor,  # quoted, not the whole body
        head + b"\n" + armor + b"PS: readable\n",
        head + b"\n" + armor + b"readable\n" + armor,  # text between two blocks
        head + b"\n" + signed_only,  # "PGP MESSAGE", but signed, not encrypted
        head + b"\n" + armor.replace(b"\n\n", b"\n\nreadable words\n"),
        head + b"Content-Type: text/html\n\n" + armor,
        head + b"Content-Transfer-Encoding: x-unknown\n\n" + armor,
        head + b"Content-Transfer-Encoding: base64\n\n" + armor,  # armor is no base64 of one
        head + b"\n" + armor.replace(b"-----END PGP MESSAGE-----", b"AAAAAAAAAAAAAAAAAAAAAAAAA"),
    ):
        assert not is_already_encrypted(raw)


def test_forwarded_or_attached_encrypted_message_is_not_encrypted(keys: Keys) -> None:
    pgp_mime = encrypt_message(PLAIN, keys.public)
    forwarded = (
        b"From: b@example.com\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="f"\r\n\r\n'
        b"--f\r\nContent-Type: text/plain\r\n\r\nForwarded.\r\n"
        b"--f\r\nContent-Type: message/rfc822\r\n\r\n" + pgp_mime + b"\r\n--f--\r\n"
    )
    assert not is_already_encrypted(forwarded)
    rfc822 = b"From: b@example.com\r\nContent-Type: message/rfc822\r\n\r\n" + pgp_mime
    assert not is_already_encrypted(rfc822)


def test_fake_pgp_mime_with_plaintext_is_not_encrypted(keys: Keys) -> None:
    outer = encrypt_message(PLAIN, keys.public)
    armor = rb"-----BEGIN PGP MESSAGE-----.*-----END PGP MESSAGE-----"
    readable = re.sub(armor, b"plain secret words", outer, flags=re.DOTALL)
    assert b"plain secret words" in readable
    assert not is_already_encrypted(readable)
    close = re.search(rb"\r\n--([^\r\n]+)--\r\n$", outer)
    assert close
    third = b"\r\n--" + close[1] + b"\r\nContent-Type: text/plain\r\n\r\nreadable words"
    third_part = outer[: close.start()] + third + outer[close.start() :]
    assert BytesParser().parsebytes(third_part).get_payload()[2].get_payload() == "readable words"
    assert not is_already_encrypted(third_part)
    no_boundary = re.sub(rb';\r\n boundary="[^"]+"', b"", outer)
    assert not is_already_encrypted(no_boundary)
    unclosed = outer[: close.start() + 2]
    assert not is_already_encrypted(unclosed)
    padded = outer[: close.start()] + b"\r\n--" + close[1] + b"-- \t\r\n"
    assert is_already_encrypted(padded)
    # Only whole delimiter lines count; look-alikes inside a part do not split it.
    version = b"\r\nVersion: 1\r\n"
    lookalikes = b"\r\nx--" + close[1] + b"\r\n--" + close[1] + b"x\r\n"
    assert is_already_encrypted(outer.replace(version, version + lookalikes))
    control = b"Content-Type: application/pgp-encrypted\r\n"
    assert not is_already_encrypted(outer.replace(control, b"Content-Type: text/plain\r\n"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_is_already_encrypted_never_fails(raw: bytes) -> None:
    assert is_already_encrypted(raw) in (True, False)


# -- failing closed --------------------------------------------------------------------------


def homes() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("ddmail-pgpmime-*")}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("expired", "expired"),
        ("sign_only", "no usable encryption"),
        ("revoked", "revoked"),
        ("garbage", "exactly one"),
        ("truncated", "exactly one"),
        ("two", "exactly one"),
        ("secret", "secret key"),
    ],
)
def test_unusable_keys(keys: Keys, key: str, reason: str) -> None:
    data = {
        "expired": keys.expired,
        "sign_only": keys.sign_only,
        "revoked": keys.revoked,
        "garbage": b"this is no key at all",
        "truncated": keys.public[: len(keys.public) // 2],
        "two": keys.public + keys.other,
        "secret": keys.secret,
    }[key]
    before = homes()
    with pytest.raises(EncryptionError, match=reason) as raised:
        encrypt_message(PLAIN, data)
    assert "SECRET" not in raised.value.reason
    assert homes() == before  # the throwaway home is gone


def test_key_expired_since_it_was_cached(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    encrypt_message(PLAIN, keys.expiring)  # checked and cached
    later = time.time() + 3 * 365 * 86400
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(EncryptionError, match="expired"):
        encrypt_message(PLAIN, keys.expiring)


def fake_gpg(directory: Path, on_encrypt: str) -> str:
    """A gpg that behaves except when asked to encrypt."""
    path = directory / "gpg"
    path.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do\n'
        f'  if [ "$arg" = --encrypt ]; then {on_encrypt}; fi\n'
        "done\n"
        'exec gpg "$@"\n'
    )
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    "on_encrypt",
    [
        "exit 2",
        # Claims success but passes the plaintext through: must still never come back.
        "echo '[GNUPG:] END_ENCRYPTION' >&2; cat; exit 0",
        "printf -- '-----BEGIN PGP MESSAGE-----\\n\\nowAA\\n-----END PGP MESSAGE-----\\n'; "
        "echo '[GNUPG:] END_ENCRYPTION' >&2; cat >/dev/null; exit 0",
    ],
)
def test_gpg_failing(keys: Keys, tmp_path: Path, on_encrypt: str) -> None:
    with pytest.raises(EncryptionError, match="gpg") as raised:
        encrypt_message(PLAIN, keys.public, gnupg_binary=fake_gpg(tmp_path, on_encrypt))
    assert "SECRET" not in str(raised.value)


def test_gpg_missing(keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(EncryptionError, match="gpg could not be run"):
        encrypt_message(PLAIN, keys.public, gnupg_binary=str(tmp_path / "no-gpg"))


# -- concurrency and the key cache -----------------------------------------------------------


def test_parallel_messages_to_two_keys(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for one home only, every other message evicts a home that other threads may
    still be using; all messages must still be encrypted, each to its own key."""
    monkeypatch.setattr(pgpmime, "_HOMES", pgpmime._KeyHomes(1))
    before = homes()
    recipients = [keys.public, keys.other] * 12

    def one(index: int) -> tuple[int, bytes]:
        body = f"message {index}\r\n".encode()
        return index, encrypt_message(b"Subject: n\r\n\r\n" + body, recipients[index])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(len(recipients))))
    for index, outer in results:
        packets = gpg(keys.home, "--list-packets", data=encrypted_payload(outer)).decode()
        keyid = keys.keyid if index % 2 == 0 else keys.other_keyid
        assert re.search(rf":pubkey enc packet: .* keyid {keyid}\b", packets)
        assert split(decrypt(keys, outer))[1] == f"message {index}\r\n".encode()
    assert len(homes() - before) <= 1


def test_evicted_home_lives_until_its_last_user_is_done(keys: Keys) -> None:
    cache = pgpmime._KeyHomes(1)
    with cache.borrow(keys.public, "gpg") as first:
        with cache.borrow(keys.public, "gpg") as shared:
            assert shared is first
            with cache.borrow(keys.other, "gpg") as second:
                assert first.evicted and Path(first.directory.name, "pubring.kbx").exists()
        assert Path(first.directory.name, "pubring.kbx").exists()  # still one user
        with cache.borrow(keys.public, "gpg") as again:  # a fresh import evicts the other
            assert again is not first and second.evicted
        assert not Path(second.directory.name).exists()
        assert Path(first.directory.name).exists()
    assert not Path(first.directory.name).exists()
    with cache.borrow(keys.public, "gpg") as cached:
        assert cached is again and Path(again.directory.name).exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2000), lf=st.booleans())
def test_random_bodies_survive_exactly(keys: Keys, body: bytes, lf: bool) -> None:
    eol = b"\n" if lf else b"\r\n"
    raw = eol.join([b"From: a@example.com", b"Subject: random", b"Content-Type: application/x"])
    raw += eol + eol + b"\x00\r" + body
    outer = encrypt_message(raw, keys.public)
    assert split(decrypt(keys, outer), eol)[1] == b"\x00\r" + body
