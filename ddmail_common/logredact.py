"""Privacy-safe logging: IP addresses and secrets never reach a log file.

``redact`` errs on the side of removing too much. Anything shaped like an IPv4 address is
replaced, whatever surrounds it, so dotted version numbers such as ``2.3.19.1`` become
``[ip]`` too; likewise text around ``::`` that reads as an IPv6 address (``Foo::Bar`` loses
its ``::``). A mangled version number costs little, while a leaked client address cannot be
taken back. Timestamps (``12:34:56``), queue ids, message-ids and three-part status codes
(``5.7.1``) do not have the shape and are left alone.

Names that identify a client are replaced by ``[host]``: the reverse-DNS name in front of a
client's address (``connect from pool-71-105-12-34.example.net[ip]``, ``client=...[ip]``), the
HELO/EHLO name (``helo=<...>``) and the names in Postfix's DNS check warnings. Such names often
spell out the address. Servers we connect to (``relay=mx.example.org[ip]``) keep their names.

Secrets are masked as ``[redacted]``: ``password=``-style values, ``Authorization`` headers,
``Bearer`` tokens and long base64/hex runs that look like key material.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import IO, Any

IP_PLACEHOLDER = "[ip]"
HOST_PLACEHOLDER = "[host]"
SECRET_PLACEHOLDER = "[redacted]"  # noqa: S105 - the mask, not a secret

_V4 = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
_H = r"[0-9A-Fa-f]{1,4}"
# Group counts are deliberately loose: a few non-addresses match, no real address is missed.
# Nothing checks what surrounds a match, so an address glued to other text is still found.
_V6 = (
    rf"(?:(?:{_H}:){{7}}{_H}"  # 2001:db8:0:0:0:0:0:1
    rf"|(?:{_H}:){{6}}{_V4}"  # 0:0:0:0:0:ffff:192.0.2.7
    rf"|(?:{_H}(?::{_H}){{0,5}})?::(?:{_H}:){{0,5}}{_V4}"  # ::ffff:192.0.2.7
    rf"|(?:{_H}(?::{_H}){{0,6}})?::(?:{_H}(?::{_H}){{0,6}})?)"  # 2001:db8::1, ::1, ::
    r"(?:%[0-9A-Za-z._~-]+)?"  # zone id, as in fe80::1%eth0
)
# A bracketed literal ([192.0.2.7], [IPv6:::1]) is replaced whole, so "host[ip]" stays readable.
# IPv6 comes first because it may end in an IPv4 address. The look-ahead cheaply skips
# positions where no address can start: every one begins with "[", ":", or hex then ":" or ".".
_IP = re.compile(
    rf"(?=\[|:|[0-9A-Fa-f]{{1,4}}[:.])(?:\[(?:[Ii][Pp][Vv]6:)?(?:{_V6}|{_V4})\]|{_V6}|{_V4})"
)
_IPV4 = re.compile(rf"(?=\[|[0-9]{{1,3}}\.)(?:\[{_V4}\]|{_V4})")

# Postfix names a client "NAME[ADDRESS]" after "from " (connect, disconnect, reject, lost
# connection, TLS ...) and "client=" (cleanup); "unknown" means no name. Runs after the address
# was replaced, so the bracket holds the placeholder (or a socket path, which is left alone).
_CLIENT_NAME = re.compile(
    r"(\bfrom |\bclient=)(?!unknown\[)[^\s\[\]<>,;]+(?=" + re.escape(IP_PLACEHOLDER) + ")"
)
# HELO/EHLO names are whatever the client says: often its own host name.
_HELO = re.compile(r"(?i)(\b(?:helo|ehlo)=<)[^>\r\n]*(>)")
# smtpd's DNS checks: "hostname NAME does not resolve to address", "hostname NAME verification
# failed", "address not listed for hostname NAME".
_HOSTNAME = re.compile(r"(\bhostname )[^\s\[\]<>,;:]+")

# A name that spells an IPv4 address with dashes or underscores (pool-71-105-12-34.example.net
# in a Message-ID, an envelope sender or a HELO) is an address too: the whole name goes.
_SPELLED_IP = re.compile(r"(?<![0-9])(?:[0-9]{1,3}[-_]){3}[0-9]{1,3}(?![0-9])")
_NAME = re.compile(r"[A-Za-z0-9_.-]{7,}")
_DASHED_DIGITS = re.compile(r"[0-9][-_][0-9]")


def _mask_spelled_ip(match: re.Match[str]) -> str:
    name = match.group()
    return HOST_PLACEHOLDER if _SPELLED_IP.search(name) else name


_KEY_VALUE = re.compile(
    r"""(?i)((?:password|passwd|pass|secret|token|key)=)(?:"[^"]*"|'[^']*'|\S+)"""
)
_KEY_WORDS = ("pass", "secret", "token", "key")
# An HTTP header value runs to the end of the line; masking all of it also covers schemes
# such as Digest whose credentials span several words.
_AUTHORIZATION = re.compile(r"""(?i)(\bauthorization['"]?\s*[:=]\s*)[^\r\n]+""")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+")

_B64 = r"[A-Za-z0-9+/=_-]"
# A maximal run of base64/base64url characters; a run directly before "@" is the left part of
# a message-id or address, not a key.
_BLOB = re.compile(rf"(?<!{_B64}){_B64}{{40,}}(?!@|{_B64})")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def _mask_blob(match: re.Match[str]) -> str:
    blob = match.group()
    # Random key material of this length is hex, or mixes both letter cases; long paths and
    # identifiers rarely do.
    looks_random = _HEX.fullmatch(blob) is not None or (
        any(c.isupper() for c in blob) and any(c.islower() for c in blob)
    )
    return SECRET_PLACEHOLDER if looks_random else blob


def redact(text: str) -> str:
    """Return TEXT with IP addresses replaced by ``[ip]`` and secrets by ``[redacted]``."""
    # Every line passes through here, so cheap substring tests pick the patterns worth running:
    # an IPv6 address has "::" or at least six colons, and the IPv6 pattern is the slow one.
    # IP addresses go first: masking a secret glued to an address could cut the address in
    # two and leave part of it unrecognised.
    ip = _IP if "::" in text or text.count(":") >= 6 else _IPV4
    text = ip.sub(IP_PLACEHOLDER, text)
    if _DASHED_DIGITS.search(text):
        text = _NAME.sub(_mask_spelled_ip, text)
    lowered = text.casefold()
    if IP_PLACEHOLDER in text:
        text = _CLIENT_NAME.sub(rf"\g<1>{HOST_PLACEHOLDER}", text)
    if "helo=" in lowered or "ehlo=" in lowered:
        text = _HELO.sub(rf"\g<1>{HOST_PLACEHOLDER}\g<2>", text)
    if "hostname " in lowered:
        text = _HOSTNAME.sub(rf"\g<1>{HOST_PLACEHOLDER}", text)
    masked = rf"\g<1>{SECRET_PLACEHOLDER}"
    if "authorization" in lowered:
        text = _AUTHORIZATION.sub(masked, text)
    if "bearer" in lowered:
        text = _BEARER.sub(masked, text)
    if any(word in lowered for word in _KEY_WORDS):
        text = _KEY_VALUE.sub(masked, text)
    return _BLOB.sub(_mask_blob, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record to its redacted, fully formatted message (args become None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format call must not raise into the caller's code
            message = f"{record.msg} {record.args}"
        record.msg = redact(message)
        record.args = None
        # Formatter.format renders exc_info only when exc_text is unset, so rendering it here
        # lets tracebacks (which often name peer addresses) be redacted as well.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install() -> None:
    """Redact every log record of this process, whichever logger or handler emits it (gunicorn,
    Flask and late-configured handlers included): the record factory formats the message once
    and stores only its redacted text."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "ddmail_redacting", False):
        return
    scrub = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub.filter(record)
        return record

    factory.ddmail_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def pump(src: IO[bytes], dst_path: Path) -> None:
    """Append the redacted lines read from SRC (until EOF) to DST_PATH, a line at a time."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(dst_path, flags | os.O_EXCL, 0o640)
        os.fchmod(fd, 0o640)  # the umask may have narrowed the mode given to open
    except FileExistsError:
        fd = os.open(dst_path, flags)
    with open(fd, "a", encoding="utf-8", buffering=1) as dst:
        for raw in src:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            dst.write(redact(line) + "\n")
