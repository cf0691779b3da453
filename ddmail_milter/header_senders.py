"""Who a submitted message says it is from: the addresses of its From and Sender headers.

Receivers show From (and Sender) to people and align DMARC on them, so an authenticated
submission may only name addresses its login owns. Parsing uses the stdlib's RFC 5322 parser
(groups, encoded words, comments); anything it reads only with a defect is refused, because a
receiver may read such a header differently (``alice@ours <bob@other>`` parses as alice).
"""

from __future__ import annotations

import re
from email import policy
from email.headerregistry import Address

from ddmail_common.validators import InvalidInput, normalize_address

# The one defect real clients produce every day ("John Q. Public <john@example.org>"); it does
# not change which address is meant.
HARMLESS_DEFECTS = frozenset({"period in 'phrase'"})
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


class Refused(Exception):
    """The headers cannot be accepted; ``reply`` is the SMTP reply to give."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def for_reply(text: str, limit: int = 100) -> str:
    """TEXT fit for an SMTP reply line: printable ASCII only, bounded."""
    return _UNPRINTABLE.sub("?", text)[:limit]


def own_form(addr_spec: str) -> str | None:
    """ADDR_SPEC as we store our own addresses (lower-case local part, A-label domain), or
    None if it cannot be one of ours."""
    try:
        return normalize_address(addr_spec)
    except InvalidInput:
        return None


def _addresses(name: str, raw: str) -> list[Address]:
    value = _FOLD.sub("", raw)
    try:
        parsed = policy.default.header_factory(name, value)
        addresses = list(parsed.addresses)
    except (ValueError, IndexError, TypeError):
        raise Refused(f"550 5.7.1 The {name} header cannot be read") from None
    defects = [str(d) for d in parsed.defects if str(d) not in HARMLESS_DEFECTS]
    if defects:
        raise Refused(f"550 5.7.1 The {name} header is malformed: {for_reply(defects[0])}")
    if not addresses:
        raise Refused(f"550 5.7.1 The {name} header must name the address you send from")
    for address in addresses:
        # An encoded word is not allowed in an address; the parser would decode it, receivers
        # would not.
        if "=?" in address.addr_spec or not address.username or not address.domain:
            raise Refused(f"550 5.7.1 The {name} header holds an address that is not valid")
    return addresses


def claimed_senders(headers: list[tuple[str, str]]) -> list[tuple[str, str, str | None]]:
    """(header name, address as written, our stored form or None) for every address of From
    and Sender.

    Raises Refused when From is missing or repeated, Sender is repeated or names more than one
    address, or either cannot be read without a defect.
    """
    froms = [value for name, value in headers if name.lower() == "from"]
    senders = [value for name, value in headers if name.lower() == "sender"]
    if not froms:
        raise Refused("550 5.7.1 The message has no From header; add your address as From")
    if len(froms) > 1:
        raise Refused("550 5.7.1 The message has more than one From header")
    if len(senders) > 1:
        raise Refused("550 5.7.1 The message has more than one Sender header")
    claimed = [("From", a) for a in _addresses("From", froms[0])]
    if senders:
        sender = _addresses("Sender", senders[0])
        if len(sender) != 1:
            raise Refused("550 5.7.1 The Sender header must name exactly one address")
        claimed.append(("Sender", sender[0]))
    return [(name, a.addr_spec, own_form(a.addr_spec)) for name, a in claimed]
