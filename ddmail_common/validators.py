"""Validation and normalisation of mail addresses and domain names.

Two kinds of address are treated differently on purpose:

* addresses we create (mailboxes, aliases) get a strict, lower-case ASCII local part, so that
  look-alike, hard-to-type or protocol-breaking names can never be registered;
* foreign addresses (senders and recipients of incoming mail) are checked leniently against
  RFC 5321 and their local part is kept as given, because it is case-sensitive there.

Domains are always returned as lower-case A-labels (IDNA 2008 with the UTS #46 mapping), which
is the one form stored and compared; ``domain_for_display`` gives the Unicode form for the UI.

Every error is an ``InvalidInput`` whose message is a plain sentence that can be shown to a user.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable

import idna


class InvalidInput(ValueError):
    """Input that failed validation; ``str(exc)`` is a sentence fit to show the user."""


_MAX_LABEL = 63
_MAX_DOMAIN = 253
_MAX_LOCAL_PART = 64
_MAX_ADDRESS = 254  # RFC 5321 path limit of 256 octets minus the angle brackets

# Our own local parts: ASCII letters and digits, single separators only between them.
_OUR_LOCAL_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_OUR_LOCAL_PART = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_SEPARATORS = "._-"

# RFC 5321 4.1.2: Dot-string / Quoted-string (qtextSMTP and quoted-pairSMTP).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_FOREIGN_LOCAL_PART = re.compile(
    rf'{_ATEXT}+(?:\.{_ATEXT}+)*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
)


def normalize_domain(text: str) -> str:
    """Return TEXT (a Unicode or A-label domain name) as a lower-case A-label, or raise."""
    domain = text.strip()
    if not domain:
        raise InvalidInput("Please enter a domain name.")
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in domain):
        raise InvalidInput("A domain name cannot contain spaces or control characters.")
    # These two get their own message; the STD3 rules below would reject them anyway.
    if "_" in domain:
        raise InvalidInput("A domain name cannot contain underscores.")
    if _is_ip_literal(domain.removesuffix(".")):
        raise InvalidInput("Please enter a domain name, not an IP address.")
    try:
        # The UTS #46 mapping lower-cases and turns ideographic full stops into dots, so it
        # must run before the name is split into labels; STD3 rules keep it to host names.
        domain = idna.uts46_remap(domain, std3_rules=True, transitional=False)
    except idna.IDNAError:
        raise InvalidInput("The domain name contains characters that are not allowed.") from None
    # One trailing dot only marks the name as fully qualified.
    domain = domain.removesuffix(".")
    labels = domain.split(".")
    if "" in labels:
        raise InvalidInput("A domain name cannot have empty parts, such as two dots in a row.")
    if len(labels) < 2:
        raise InvalidInput("Please enter a full domain name, such as example.org.")
    if any(label.startswith("-") or label.endswith("-") for label in labels):
        raise InvalidInput("Parts of a domain name cannot start or end with a hyphen.")
    # Measured before IDNA validation so that the user is told the real problem: idna would
    # only report a long label as an error.
    lengths = [
        len(label) if label.isascii() else 4 + len(label.encode("punycode")) for label in labels
    ]
    if max(lengths) > _MAX_LABEL:
        raise InvalidInput("Each part of the domain name can be at most 63 characters long.")
    if sum(lengths) + len(labels) - 1 > _MAX_DOMAIN:
        raise InvalidInput("The domain name is too long.")
    try:
        a_label = idna.encode(domain).decode("ascii")
    except idna.IDNAError:
        raise InvalidInput("The domain name contains characters that are not allowed.") from None
    # RFC 3696 section 2: an all-numeric top-level domain would be mistaken for an address.
    if a_label.rpartition(".")[2].isdigit():
        raise InvalidInput("The last part of a domain name cannot consist of digits only.")
    return a_label


def _is_ip_literal(text: str) -> bool:
    """True for IPv4/IPv6 addresses, bare or as SMTP address literals like ``[IPv6:::1]``."""
    inner = text.removeprefix("[").removesuffix("]")
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        ipaddress.ip_address(inner)
    except ValueError:
        return False
    return True


def domain_for_display(a_label: str) -> str:
    """Return the Unicode form (U-label) of a normalised domain, for showing in the UI."""
    try:
        return idna.decode(a_label)
    except idna.IDNAError:
        raise InvalidInput("The domain name is not valid.") from None


def normalize_local_part(text: str) -> str:
    """Return the lower-cased local part for an address we create, or raise.

    Allowed: a-z, 0-9, and single ``.``, ``-`` or ``_`` between letters or digits; 1-64 long.
    ``+`` is excluded because it is the sub-address delimiter.
    """
    local = text.strip()
    if not local:
        raise InvalidInput("Please enter the part before the @.")
    if len(local) > _MAX_LOCAL_PART:
        raise InvalidInput("The part before the @ can be at most 64 characters long.")
    # Checked before lower-casing: str.lower() maps some non-ASCII look-alikes, such as the
    # Kelvin sign, onto ASCII letters.
    if not _OUR_LOCAL_CHARS.fullmatch(local):
        raise InvalidInput(
            "Only letters a-z, digits, dots, hyphens and underscores can be used before the @."
        )
    local = local.lower()
    if local[0] in _SEPARATORS or local[-1] in _SEPARATORS:
        raise InvalidInput("The part before the @ must start and end with a letter or digit.")
    if not _OUR_LOCAL_PART.fullmatch(local):
        raise InvalidInput("Dots, hyphens and underscores cannot follow one another.")
    return local


def normalize_address(text: str) -> str:
    """Return ``local@a-label`` for an address we create, or raise."""
    address = text.strip()
    if any(ch.isspace() for ch in address):
        raise InvalidInput("An address cannot contain spaces.")
    local, at, domain = address.rpartition("@")
    if not at:
        raise InvalidInput("Please enter a full address, such as name@example.org.")
    local = normalize_local_part(local)
    domain = normalize_domain(domain)
    if len(local) + 1 + len(domain) > _MAX_ADDRESS:
        raise InvalidInput("The address is too long.")
    return f"{local}@{domain}"


def is_null_sender(text: str) -> bool:
    """True for the null reverse-path used by bounces, bare or in angle brackets."""
    return text in ("", "<>")


def parse_foreign_address(text: str) -> tuple[str, str]:
    """Split an address from outside into (local part as given, A-label domain), or raise.

    The null sender is not an address; check it with ``is_null_sender`` first.
    """
    # The last @ separates the domain: a quoted local part may itself contain @.
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise InvalidInput("This is not a valid mail address.")
    if len(local) > _MAX_LOCAL_PART:
        raise InvalidInput("The part before the @ is too long.")
    if not _FOREIGN_LOCAL_PART.fullmatch(local):
        raise InvalidInput("The part before the @ is not valid.")
    # normalize_domain forgives surrounding spaces, which is wrong inside an address.
    if domain != domain.strip():
        raise InvalidInput("An address cannot contain spaces around the @.")
    domain = normalize_domain(domain)
    if len(local) + 1 + len(domain) > _MAX_ADDRESS:
        raise InvalidInput("The address is too long.")
    return local, domain


# The one list of addresses the service itself publishes or that an RFC requires (RFC 5321
# section 4.5.1 postmaster, RFC 2142 abuse/hostmaster/webmaster, RFC 9116 security, RFC 8460
# TLS-RPT and DMARC reports, MTA-STS). Nobody may register them; mail to them on a global domain
# is delivered to the operator (backend.operator_address), through rows the backend keeps.
OPERATOR_LOCAL_PARTS: tuple[str, ...] = (
    "postmaster",
    "abuse",
    "security",
    "tlsrpt",
    "dmarc",
    "mta-sts",
    "hostmaster",
    "webmaster",
)
# On a customer's verified domain the customer may create these; until they do, mail to them
# goes to the operator, so that postmaster@ works for every domain we host (RFC 5321).
EVERY_DOMAIN_OPERATOR_LOCAL_PARTS: tuple[str, ...] = ("postmaster", "abuse")

RESERVED_LOCAL_PARTS: frozenset[str] = frozenset(
    {
        *OPERATOR_LOCAL_PARTS,
        "admin",
        "administrator",
        "root",
        "noreply",
        "no-reply",
        "mailer-daemon",
    }
)


def operator_address(local_part: str, domain: str) -> str:
    """The published address LOCAL_PART@DOMAIN; only names from OPERATOR_LOCAL_PARTS."""
    if local_part not in OPERATOR_LOCAL_PARTS:
        raise ValueError(f"{local_part!r} is not an operator address")
    return f"{local_part}@{domain}"


_DROP_SEPARATORS = str.maketrans("", "", _SEPARATORS)


def _reserved_key(local_part: str) -> str:
    # "Post.Master", "post-master" and "postmaster+x" look like (or reach) the postmaster too.
    return local_part.casefold().partition("+")[0].translate(_DROP_SEPARATORS)


_RESERVED_KEYS = frozenset(_reserved_key(name) for name in RESERVED_LOCAL_PARTS)
_OPERATOR_KEYS = frozenset(_reserved_key(name) for name in OPERATOR_LOCAL_PARTS)


def is_operator_address(local_part: str) -> bool:
    """True if LOCAL_PART is (or differs by separators from) an operator address's local part."""
    return _reserved_key(local_part) in _OPERATOR_KEYS


def is_reserved(local_part: str, extra: Iterable[str] = ()) -> bool:
    """True if LOCAL_PART is, or merely differs by separators from, a reserved name."""
    key = _reserved_key(local_part)
    return key in _RESERVED_KEYS or any(key == _reserved_key(name) for name in extra)
