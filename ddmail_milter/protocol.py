"""The Sendmail milter wire protocol (version 6), as much of it as a policy milter needs.

Every packet is a 4-byte big-endian length, one command byte and its data. Only the MTA's
commands are parsed here and only this milter's replies are built; the policy lives in
:mod:`ddmail_milter.session`.
"""

from __future__ import annotations

import asyncio

VERSION = 6
MAX_PACKET = 1024 * 1024  # Postfix sends at most 64 KiB of body per packet; headers are smaller

# Commands from the MTA.
OPTNEG = "O"
MACRO = "D"
CONNECT = "C"
HELO = "H"
MAIL = "M"
RCPT = "R"
DATA = "T"
HEADER = "L"
EOH = "N"
BODY = "B"
BODYEOB = "E"
ABORT = "A"
QUIT = "Q"
QUIT_NC = "K"
UNKNOWN = "U"

# Replies.
CONTINUE = b"c"
REPLYCODE = b"y"

# Actions this milter may take: none, it only answers (header removal is Postfix's cleanup).
ACTIONS = 0
# Steps the MTA may skip (SMFIP_*): the client's address and HELO name never reach the milter,
# and neither does the body.
NOCONNECT = 0x01
NOHELO = 0x02
NOBODY = 0x10
NOUNKNOWN = 0x100
NODATA = 0x200
WANTED_SKIPS = NOCONNECT | NOHELO | NOBODY | NOUNKNOWN | NODATA


class ProtocolError(Exception):
    """The MTA sent something that is not a milter packet this milter understands."""


async def read_packet(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """One (command, data) from the MTA; raises asyncio.IncompleteReadError at EOF."""
    length = int.from_bytes(await reader.readexactly(4), "big")
    if not 1 <= length <= MAX_PACKET:
        raise ProtocolError(f"packet length {length} out of range")
    packet = await reader.readexactly(length)
    return chr(packet[0]), packet[1:]


def packet(command: bytes, data: bytes = b"") -> bytes:
    return (len(data) + 1).to_bytes(4, "big") + command + data


def strings(data: bytes) -> list[str]:
    """The NUL-terminated strings of DATA (UTF-8; anything else is replaced, never trusted)."""
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", errors="replace") for p in parts]


def macros(data: bytes) -> tuple[str, dict[str, str]]:
    """A MACRO packet: the command it belongs to and its name/value pairs (braces kept)."""
    if not data:
        raise ProtocolError("empty macro packet")
    items = strings(data[1:])
    return chr(data[0]), dict(zip(items[0::2], items[1::2], strict=False))


def header(data: bytes) -> tuple[str, str]:
    items = strings(data)
    if len(items) != 2:
        raise ProtocolError("header packet without name and value")
    return items[0], items[1]


def negotiate(data: bytes) -> bytes:
    """Our answer to the MTA's OPTNEG: version 6, no actions, skip what we do not need."""
    if len(data) < 12:
        raise ProtocolError("short option negotiation")
    offered_skips = int.from_bytes(data[8:12], "big")
    return packet(
        b"O",
        VERSION.to_bytes(4, "big")
        + ACTIONS.to_bytes(4, "big")
        + (WANTED_SKIPS & offered_skips).to_bytes(4, "big"),
    )


def reply(text: str) -> bytes:
    """A complete SMTP reply ("550 5.7.1 text") for the current stage."""
    return packet(REPLYCODE, text.encode("utf-8") + b"\0")


def proceed() -> bytes:
    return packet(CONTINUE)
