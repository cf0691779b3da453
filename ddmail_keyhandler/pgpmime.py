"""OpenPGP encryption on arrival: turn one incoming message into an RFC 3156 PGP/MIME message.

Pure functions for the delivery stage, which decides per recipient and answers a temporary
failure on any exception (it must never store the plaintext instead):

* ``is_already_encrypted(raw)`` parses the MIME structure; the text of a body never counts.
* ``encrypt_message(raw, key)`` works on bytes end to end. The original body is encrypted byte
  for byte, under its own Content-* header fields and copies of the headers a reader needs
  (protected headers, ``protected-headers="v1"``); outside, the Subject becomes ``...`` while
  the routing, threading and authentication headers stay exactly as they arrived.

gpg work is the expensive part (a GnuPG home per message costs about 30 ms of CPU in four gpg
runs: list-config, import, list, encrypt). So each distinct recipient key is imported and
checked once into its own private home, and later messages to that key only run
``gpg --encrypt`` there (about 8 ms of CPU in all). See ``_KeyHomes``.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from typing import Any

import gnupg

from ddmail_keyhandler.openpgp_judge import KeyUnusable, Verdict, judge

# Copied into the encrypted part so the reader's client can show the real values.
PROTECTED = frozenset(
    {
        b"subject",
        b"from",
        b"to",
        b"cc",
        b"date",
        b"message-id",
        b"reply-to",
        b"in-reply-to",
        b"references",
        b"thread-topic",
        b"keywords",
        b"comments",
    }
)
# Removed from the outside: Outlook's Thread-Topic repeats the subject, and Keywords and Comments
# are free text about the content. (Subject itself is replaced, not removed.)
CONFIDENTIAL = frozenset({b"thread-topic", b"keywords", b"comments"})
HIDDEN_SUBJECT = b"Subject: ..."
PROTECTED_HEADERS_PARAM = b'protected-headers="v1"'
BEGIN = b"-----BEGIN PGP MESSAGE-----"
END = b"-----END PGP MESSAGE-----"
# Packets that start an encrypted message: a public-key or a symmetric-key encrypted session
# key (RFC 9580 §5.1, §5.3). A signed-only "PGP MESSAGE" starts otherwise and is readable.
SESSION_KEY_TAGS = frozenset({1, 3})
CACHED_KEYS = 512
GPG_OPTIONS = [
    "--no-autostart",  # a public key needs no gpg-agent; none is started or left behind
    "--no-options",  # only what we pass counts
    "--no-random-seed-file",  # encrypting then writes nothing, so a home can serve threads
]

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# The BEGIN line, armor header lines ("Comment: ..."), and the empty line that ends them.
_ARMOR_HEAD = re.compile(
    rb"-----BEGIN PGP MESSAGE-----[ \t]*\r?\n(?:[\x21-\x39\x3b-\x7e]+: [^\n]*\n)*(?:[ \t]*\r?\n)?"
)
_BASE64_TEXT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"


class EncryptionError(Exception):
    """Encryption is impossible; the message must be deferred, never stored in plaintext.

    The reason names the cause only (never any message content), so it can be logged and shown
    to the mailbox owner."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- parsing bytes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: bytes  # lowercased
    raw: bytes  # the whole field as it arrived: folded lines and line endings included


@dataclass(frozen=True)
class _Message:
    fields: list[_Field]
    header_block: bytes  # the fields' bytes, without the empty line that ends them
    body: bytes
    eol: bytes


def _split(raw: bytes) -> _Message:
    """Split a message into header fields and body, byte-exactly.

    The header section ends at the first empty line, or (as in Python's email parser) at the
    first line that is neither a field nor a continuation: that line then starts the body."""
    first_newline = raw.find(b"\n")
    lf_only = first_newline >= 0 and not raw[:first_newline].endswith(b"\r")
    eol = b"\n" if lf_only else b"\r\n"  # CRLF too when there is no line break at all
    starts: list[tuple[bytes, int]] = []  # (lowercased name, offset) of each field
    position, body_start = 0, len(raw)
    while position < len(raw):
        newline = raw.find(b"\n", position)
        end = len(raw) if newline < 0 else newline + 1
        line = raw[position:end]
        if line in (b"\n", b"\r\n"):
            body_start = end
            break
        if not (starts and line[:1] in (b" ", b"\t")):
            match = _FIELD_NAME.match(line)
            if match is None:
                body_start = position
                break
            starts.append((match[1].lower(), position))
        position = end
    bounds = [offset for _, offset in starts] + [position]
    fields = [_Field(name, raw[start : bounds[i + 1]]) for i, (name, start) in enumerate(starts)]
    return _Message(fields, raw[:position], raw[body_start:], eol)


def _terminated(raw_field: bytes, eol: bytes) -> bytes:
    # Only the last field of a message without a body can lack its line ending.
    return raw_field if raw_field.endswith(b"\n") else raw_field + eol


def _decode(data: bytes, encoding: str) -> bytes | None:
    """Undo a Content-Transfer-Encoding; None when it is unknown or broken."""
    encoding = encoding.strip().lower()
    if encoding in ("", "7bit", "8bit", "binary"):
        return data
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    if encoding == "base64":
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            return None
    return None


def _is_encrypted_armor(data: bytes) -> bool:
    """Whether DATA is, apart from surrounding whitespace, exactly one ASCII-armored OpenPGP
    message that starts with an encrypted session key. Anything else around or inside the
    armor (text before, after or between blocks; a signed-only message) could be readable.

    Linear and in C for the bulk (a megabyte in about a millisecond): only the first packet
    header is decoded; the rest need only consist of base64 text."""
    data = data.strip()
    head = _ARMOR_HEAD.match(data)
    if head is None or not data.endswith(b"\n" + END):
        return False
    payload = data[head.end() : -len(END)]
    if payload.translate(None, _BASE64_TEXT):
        return False
    try:
        first = binascii.a2b_base64(payload[:4], strict_mode=True)[0]
    except (binascii.Error, IndexError):
        return False
    if not first & 0x80:  # not a packet header
        return False
    tag = first & 0x3F if first & 0x40 else (first >> 2) & 0x0F
    return tag in SESSION_KEY_TAGS


def _headers(message: _Message) -> Message:
    # compat32 reads leniently and never raises on malformed fields; the default policy's
    # parser raises IndexError on some Content-Type values (Python 3.11).
    return BytesHeaderParser(policy=compat32).parsebytes(message.header_block)


def _body_parts(body: bytes, boundary: bytes) -> list[bytes] | None:
    """The body parts of a multipart body (RFC 2046 §5.1.1), or None without a close delimiter.

    Found with bytes.find rather than Python's email parser, which takes about 40 ms per
    megabyte; the bulk of an encrypted message is one long part."""
    marker = b"--" + boundary
    parts: list[bytes] = []
    start: int | None = None  # of the current part; None in the preamble
    at = body.find(marker)
    while at >= 0:
        after = at + len(marker)
        closing = body.startswith(b"--", after)
        line_end = body.find(b"\n", after)
        line_end = len(body) if line_end < 0 else line_end
        padding = body[after + 2 if closing else after : line_end]
        if (at == 0 or body[at - 1] == 0x0A) and not padding.strip(b" \t\r"):
            if start is not None:
                end = at - 2 if body[at - 2 : at] == b"\r\n" else at - 1
                parts.append(body[start:end])
            if closing:
                return parts
            start = line_end + 1
        at = body.find(marker, after)
    return None


def _is_pgp_mime(body: bytes, boundary: bytes) -> bool:
    """The parts of a multipart/encrypted body are the RFC 3156 pair, the second one an
    encrypted armored message (another structure may hold plaintext: it gets encrypted)."""
    parts = _body_parts(body, boundary)
    if parts is None or len(parts) != 2:
        return False
    control, encrypted = (_split(part) for part in parts)
    if _headers(control).get_content_type() != "application/pgp-encrypted":
        return False
    headers = _headers(encrypted)
    if headers.get_content_type() != "application/octet-stream":
        return False
    armor = _decode(encrypted.body, str(headers.get("content-transfer-encoding", "")))
    return armor is not None and _is_encrypted_armor(armor)


def is_already_encrypted(raw: bytes) -> bool:
    """Whether RAW is already an OpenPGP-encrypted message, to be stored as it is: a top-level
    PGP/MIME multipart/encrypted, or a single text/plain part whose whole (decoded) body is one
    encrypted armored PGP message. Decided from the MIME structure, never by searching text,
    so a forwarded or quoted encrypted message, or a body that talks about one, does not
    count."""
    message = _split(raw)
    headers = _headers(message)
    content_type = headers.get_content_type()  # text/plain when absent or invalid (RFC 2045)
    if content_type == "multipart/encrypted":
        protocol = headers.get_param("protocol")
        if protocol is None:
            return False
        if collapse_rfc2231_value(protocol).strip().lower() != "application/pgp-encrypted":
            return False
        boundary = headers.get_boundary()
        # Parsed from bytes, the text holds the original bytes as surrogate escapes.
        return bool(boundary) and _is_pgp_mime(
            message.body, str(boundary).encode("utf-8", "surrogateescape")
        )
    if content_type == "text/plain":
        body = _decode(message.body, str(headers.get("content-transfer-encoding", "")))
        return body is not None and _is_encrypted_armor(body)
    return False


# -- the PGP/MIME structure ------------------------------------------------------------------


def _mark_protected(content_type: bytes, eol: bytes) -> bytes:
    """Add protected-headers="v1" to a Content-Type field, unless it has that parameter."""
    if _headers(_split(content_type)).get_param("protected-headers") is not None:
        return content_type
    # Trailing whitespace and an empty last parameter (a dangling ";") carry no meaning.
    return content_type.rstrip(b" \t\r\n;") + b";" + eol + b" " + PROTECTED_HEADERS_PARAM + eol


def _inner_part(message: _Message) -> bytes:
    """The entity that gets encrypted: the original Content-* fields (the first Content-Type
    marked), copies of the protected headers, in their original order, then the body."""
    eol = message.eol
    lines: list[bytes] = []
    marked = False
    for item in message.fields:
        raw = _terminated(item.raw, eol)
        if item.name == b"content-type" and not marked:
            lines.append(_mark_protected(raw, eol))
            marked = True
        elif item.name.startswith(b"content-") or item.name in PROTECTED:
            lines.append(raw)
    if not marked:  # RFC 2045's default, said explicitly so the parameter has a home
        lines.insert(0, b"Content-Type: text/plain; " + PROTECTED_HEADERS_PARAM + eol)
    return b"".join(lines) + eol + message.body


def _outer_message(message: _Message, armor: bytes) -> bytes:
    eol = message.eol
    boundary = b"ddmail-pgp." + secrets.token_hex(16).encode()  # "." never occurs in armor
    lines: list[bytes] = []
    subject_hidden = False
    for item in message.fields:
        if item.name.startswith(b"content-") or item.name == b"mime-version":
            continue
        if item.name in CONFIDENTIAL:
            continue
        if item.name == b"subject":
            if not subject_hidden:
                lines.append(HIDDEN_SUBJECT + eol)
                subject_hidden = True
            continue
        lines.append(_terminated(item.raw, eol))
    # Checked to be base64 text in lines: only the line endings may need converting.
    armor_lines = armor.strip().replace(b"\r\n", b"\n").replace(b"\n", eol) + eol
    lines += [
        b"MIME-Version: 1.0" + eol,
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";' + eol,
        b' boundary="' + boundary + b'"' + eol,
        eol,
        b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)" + eol,
        b"--" + boundary + eol,
        b"Content-Type: application/pgp-encrypted" + eol,
        b"Content-Description: PGP/MIME version identification" + eol,
        eol,
        b"Version: 1" + eol,
        eol,
        b"--" + boundary + eol,
        b'Content-Type: application/octet-stream; name="encrypted.asc"' + eol,
        b"Content-Description: OpenPGP encrypted message" + eol,
        b'Content-Disposition: inline; filename="encrypted.asc"' + eol,
        eol,
        armor_lines,
        eol,
        b"--" + boundary + b"--" + eol,
    ]
    return b"".join(lines)


# -- gpg ---------------------------------------------------------------------------------------


def _judged(listing: Any, now: int) -> Verdict:
    """The verdict on the one key gpg lists (the upload check's own judgement)."""
    if len(listing) != 1:
        raise EncryptionError(
            f"the key data does not hold exactly one public key (gpg read {len(listing)})"
        )
    try:
        return judge(listing[0], now)
    except KeyUnusable as exc:
        raise EncryptionError(exc.reason) from None


@dataclass
class _KeyHome:
    """A private GnuPG home holding exactly one checked public key."""

    directory: tempfile.TemporaryDirectory[str]
    gpg: Any  # gnupg.GPG, bound to the directory
    fingerprint: str
    verdict: Verdict
    users: int = 0
    evicted: bool = False

    def recipient(self, now: int) -> str:
        """The one (sub)key to encrypt to now, named so that gpg takes exactly that one. When
        the chosen subkey has expired since, the key is judged again (another strong subkey
        may take over)."""
        chosen_until = self.verdict.chosen_until
        if chosen_until is not None and now >= chosen_until:
            self.verdict = _judged(self.gpg.list_keys(), now)
        return f"{self.verdict.encrypt_to}!"


def _import(key: bytes, gnupg_binary: str) -> _KeyHome:
    now = int(time.time())
    # A fresh 0700 directory (mkdtemp's mode); gpg gets no environment of ours, so neither
    # GNUPGHOME nor an agent socket of this process can reach it.
    directory = tempfile.TemporaryDirectory(prefix="ddmail-pgpmime-")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        try:
            gpg = gnupg.GPG(
                gpgbinary=gnupg_binary, gnupghome=directory.name, options=GPG_OPTIONS, env=env
            )
            imported = gpg.import_keys(key)
            listing = gpg.list_keys()
        except (OSError, ValueError):
            raise EncryptionError("gpg could not be run to import the key") from None
        if int(imported.sec_read or 0):
            raise EncryptionError("the key contains secret key material")
        if imported.count != 1 or len(imported.fingerprints) != 1 or len(listing) != 1:
            raise EncryptionError(
                f"the key data does not hold exactly one public key (gpg read {len(listing)})"
            )
        listed = listing[0]
        fingerprint = str(listed.get("fingerprint", "")).upper()
        if fingerprint != str(imported.fingerprints[0]).upper():
            raise EncryptionError("gpg reports inconsistent fingerprints for the key")
        verdict = _judged(listing, now)
    except BaseException:
        directory.cleanup()
        raise
    return _KeyHome(directory, gpg, fingerprint, verdict)


class _KeyHomes:
    """A bounded, thread-safe LRU cache of key homes.

    Keyed by a hash of the exact key bytes and the gpg binary, not by fingerprint: a key with a
    new subkey, expiry or revocation has other bytes and gets its own freshly checked home.
    Each home holds one key and gpg is told the fingerprint of the one (sub)key the shared
    judgement chose, with "!", so a message can only be encrypted to that (sub)key of the key
    its caller passed, never to a weak subkey gpg would pick itself. Encrypting writes nothing
    to a home, so threads share one; a home evicted while in use is removed by its last user."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._homes: OrderedDict[bytes, _KeyHome] = OrderedDict()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self, key: bytes, gnupg_binary: str) -> Iterator[_KeyHome]:
        name = hashlib.sha256(gnupg_binary.encode() + b"\0" + key).digest()
        with self._lock:
            home = self._homes.get(name)
            if home is not None:
                self._homes.move_to_end(name)
                home.users += 1
        if home is None:
            home = self._add(name, _import(key, gnupg_binary))
        try:
            yield home
        finally:
            with self._lock:
                home.users -= 1
                finished = home.evicted and home.users == 0
            if finished:
                home.directory.cleanup()

    def _add(self, name: bytes, fresh: _KeyHome) -> _KeyHome:
        unused: list[_KeyHome] = []
        with self._lock:
            home = self._homes.get(name)
            if home is None:  # else another thread imported the same key meanwhile
                home = self._homes[name] = fresh
                while len(self._homes) > self.capacity:
                    _, old = self._homes.popitem(last=False)
                    old.evicted = True
                    if old.users == 0:
                        unused.append(old)
            else:
                unused.append(fresh)
            home.users += 1
        for old in unused:
            old.directory.cleanup()
        return home


_HOMES = _KeyHomes(CACHED_KEYS)


def _encrypt(data: bytes, key: bytes, gnupg_binary: str) -> bytes:
    with _HOMES.borrow(key, gnupg_binary) as home:
        try:
            recipient = home.recipient(int(time.time()))
            # Bytes in: python-gnupg only encodes str (as latin-1), so nothing is transcoded.
            result = home.gpg.encrypt(data, recipient, armor=True, always_trust=True)
        except (OSError, ValueError):
            raise EncryptionError(
                "gpg failed to encrypt (it could not run or stopped early)"
            ) from None
    armor = bytes(result.data or b"")
    if not result.ok or result.returncode != 0:
        raise EncryptionError(f"gpg failed to encrypt ({result.status or 'no status'})")
    # Whatever gpg said, only an encrypted armored message leaves this function.
    if not _is_encrypted_armor(armor):
        raise EncryptionError("gpg did not produce an encrypted message")
    return armor


def encrypt_message(raw: bytes, recipient_key: bytes, gnupg_binary: str = "gpg") -> bytes:
    """Return RAW as a PGP/MIME message encrypted to RECIPIENT_KEY (one armored or binary
    OpenPGP public key); raise EncryptionError when that is impossible."""
    message = _split(raw)
    armor = _encrypt(_inner_part(message), recipient_key, gnupg_binary)
    return _outer_message(message, armor)
