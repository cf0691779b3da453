from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.provisional import domains

from ddmail_common.validators import (
    RESERVED_LOCAL_PARTS,
    InvalidInput,
    domain_for_display,
    is_null_sender,
    is_reserved,
    normalize_address,
    normalize_domain,
    normalize_local_part,
    parse_foreign_address,
)

LDH_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9-]*[a-z][a-z0-9-]*")
OUR_LOCAL_PART = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


def fullwidth(ascii_text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in ascii_text)


def message(func: Callable[[str], object], text: str) -> str:
    with pytest.raises(InvalidInput) as info:
        func(text)
    return str(info.value)


# --- normalize_domain -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.org", "example.org"),
        ("Mail.Example.ORG", "mail.example.org"),
        ("  example.org\n", "example.org"),
        ("example.org.", "example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008: no transitional mapping to "fass"
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        (fullwidth("example") + "\u3002" + fullwidth("org"), "example.org"),  # 。 is a full stop
        ("a-b.example", "a-b.example"),
        ("123.example", "123.example"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_domain_is_normalised_to_lower_case_a_label(text: str, expected: str) -> None:
    assert normalize_domain(text) == expected


def test_domain_of_exactly_253_octets_is_accepted() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(name) == 253
    assert normalize_domain(name) == name


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "enter a domain"),
        ("   ", "enter a domain"),
        ("a" * 64 + ".example", "at most 63"),
        ("ü" * 60 + ".example", "at most 63"),  # short in characters, long as an A-label
        (".".join(["a" * 63] * 3 + ["b" * 62]), "too long"),
        ("a..b", "empty parts"),
        (".example.org", "empty parts"),
        ("example.org..", "empty parts"),
        ("-a.com", "hyphen"),
        ("a-.com", "hyphen"),
        ("a.-com", "hyphen"),
        ("example.123", "digits only"),
        ("localhost", "full domain name"),
        ("com.", "full domain name"),
        ("_dmarc.example.org", "underscores"),
        ("a b.example", "spaces"),
        ("example.org\x00", "control"),
        ("example.org\r\nRCPT TO:<x@y>", "spaces"),
        ("exa\tmple.org", "spaces"),
        ("192.0.2.7", "IP address"),
        ("[192.0.2.7]", "IP address"),
        ("192.0.2.7.", "IP address"),
        ("::1", "IP address"),
        ("[IPv6:2001:db8::1]", "IP address"),
        ("ab--cd.example", "not allowed"),  # reserved for A-labels
        ("xn--zz.example", "not allowed"),  # not valid Punycode
        ("exa<mple>.org", "not allowed"),
        ('"example".org', "not allowed"),
        ("a@b.example", "not allowed"),
        ("☃.example", "not allowed"),  # symbols are not valid in IDNA 2008
        ("a⒈com", "not allowed"),  # would otherwise map to "a1.com"
    ],
)
def test_bad_domain_is_rejected_with_a_clear_message(text: str, fragment: str) -> None:
    assert fragment in message(normalize_domain, text)


@given(domains())
def test_any_valid_ascii_domain_is_accepted_lower_cased(name: str) -> None:
    # Labels with "--" in third and fourth place are reserved for A-labels by IDNA 2008.
    assume(all(label[2:4] != "--" for label in name.split(".")))
    assert normalize_domain(name) == name.lower()


@given(st.text(max_size=80))
def test_domain_normaliser_only_returns_valid_a_labels_or_raises_invalid_input(text: str) -> None:
    try:
        result = normalize_domain(text)
    except InvalidInput:
        return
    assert LDH_DOMAIN.fullmatch(result)
    assert len(result) <= 253
    assert normalize_domain(result) == result


def test_domain_is_shown_as_unicode() -> None:
    assert domain_for_display("xn--bcher-kva.example") == "bücher.example"
    assert domain_for_display("example.org") == "example.org"


def test_display_of_a_broken_a_label_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        domain_for_display("xn--zz.example")


# --- our local parts and addresses ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice", "alice"),
        ("Alice.Smith", "alice.smith"),
        ("a-b_c.d", "a-b_c.d"),
        ("007", "007"),
        ("a" * 64, "a" * 64),
    ],
)
def test_our_local_part_is_lower_cased(text: str, expected: str) -> None:
    assert normalize_local_part(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "enter the part"),
        ("a" * 65, "at most 64"),
        (".alice", "start and end"),
        ("alice.", "start and end"),
        ("-alice", "start and end"),
        ("_alice", "start and end"),
        ("a..b", "follow one another"),
        ("a.-b", "follow one another"),
        ("a__b", "follow one another"),
        ("a+b", "Only letters"),  # "+" is the sub-address delimiter
        ("<alice>", "Only letters"),
        ('"alice"', "Only letters"),
        ("al'ice", "Only letters"),
        ("a@b", "Only letters"),
        ("a b", "Only letters"),
        ("a\x00b", "Only letters"),
        ("a\r\nb", "Only letters"),
        ("\u0430dmin", "Only letters"),  # Cyrillic a
        (fullwidth("admin"), "Only letters"),
        ("\u212aarl", "Only letters"),  # Kelvin sign: "\u212a".lower() == "k"
        ("dotless\u0131", "Only letters"),
        ("caf\u00e9", "Only letters"),
    ],
)
def test_bad_local_part_for_our_addresses_is_rejected(text: str, fragment: str) -> None:
    assert fragment in message(normalize_local_part, text)


@given(st.text(max_size=70))
def test_our_local_part_is_always_plain_ascii_or_rejected(text: str) -> None:
    try:
        result = normalize_local_part(text)
    except InvalidInput:
        return
    assert OUR_LOCAL_PART.fullmatch(result)
    assert len(result) <= 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice@Example.ORG", "alice@example.org"),
        (" alice@bücher.example ", "alice@xn--bcher-kva.example"),
        ("alice@example.org.", "alice@example.org"),
    ],
)
def test_our_address_is_normalised(text: str, expected: str) -> None:
    assert normalize_address(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("alice", "full address"),
        ("alice@", "enter a domain"),
        ("@example.org", "enter the part"),
        ("a@b@example.org", "Only letters"),  # split at the last @; "a@b" is no local part
        ("alice @example.org", "spaces"),
        ("alice@ example.org", "spaces"),
        ("alice@example.org\r\nRCPT TO:<evil@x.example>", "spaces"),
        ("<alice@example.org>", "Only letters"),
        ('"alice"@example.org', "Only letters"),
        ("alice@192.0.2.7", "IP address"),
        ("alice@[192.0.2.7]", "IP address"),
        ("a" * 64 + "@" + ".".join(["b" * 63] * 2 + ["c" * 62]), "too long"),
    ],
)
def test_bad_address_for_us_is_rejected(text: str, fragment: str) -> None:
    assert fragment in message(normalize_address, text)


def test_address_of_exactly_254_octets_is_accepted() -> None:
    domain = ".".join(["b" * 63] * 2 + ["c" * 61])
    address = "a" * 64 + "@" + domain
    assert len(address) == 254
    assert normalize_address(address) == address


# --- foreign addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice@Example.ORG", ("Alice", "example.org")),  # local part keeps its case
        ("o'brien&co/x!#%*?^{}|~--@example.org", ("o'brien&co/x!#%*?^{}|~--", "example.org")),
        ("first.last+tag@example.org", ("first.last+tag", "example.org")),
        ('"john doe"@example.org', ('"john doe"', "example.org")),
        ('"a@b"@example.org', ('"a@b"', "example.org")),
        ('"quote\\"d"@example.org', ('"quote\\"d"', "example.org")),
        ("user@Bücher.example", ("user", "xn--bcher-kva.example")),
        ("a" * 64 + "@example.org", ("a" * 64, "example.org")),
    ],
)
def test_foreign_address_is_parsed_leniently(text: str, expected: tuple[str, str]) -> None:
    assert parse_foreign_address(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "not a valid"),
        ("<>", "not a valid"),
        ("alice", "not a valid"),
        ("@example.org", "not a valid"),
        ("a" * 65 + "@example.org", "too long"),
        (".alice@example.org", "not valid"),
        ("alice.@example.org", "not valid"),
        ("a..b@example.org", "not valid"),
        ("a b@example.org", "not valid"),
        ("<alice>@example.org", "not valid"),
        ('"unterminated@example.org', "not valid"),
        ('"a"b"@example.org', "not valid"),
        ('"tab\there"@example.org', "not valid"),
        ("alice\x00@example.org", "not valid"),
        ("alice\r\n@example.org", "not valid"),
        ("ålice@example.org", "not valid"),  # SMTPUTF8 local parts are not accepted
        ("alice@ example.org", "spaces"),
        ("alice@example.org\r\n", "spaces"),
        ("alice@exa mple.org", "spaces"),
        ("alice@[192.0.2.7]", "IP address"),
        ("alice@example", "full domain name"),
        ("a" * 64 + "@" + ".".join(["b" * 63] * 2 + ["c" * 62]), "too long"),
    ],
)
def test_bad_foreign_address_is_rejected(text: str, fragment: str) -> None:
    assert fragment in message(parse_foreign_address, text)


@given(st.text(max_size=80))
def test_foreign_parser_raises_nothing_but_invalid_input(text: str) -> None:
    try:
        local, domain = parse_foreign_address(text)
    except InvalidInput:
        return
    assert f"{local}@{domain}".isascii()
    assert LDH_DOMAIN.fullmatch(domain)


def test_null_sender_is_recognised_bare_or_in_brackets() -> None:
    assert is_null_sender("")
    assert is_null_sender("<>")
    assert not is_null_sender(" ")
    assert not is_null_sender("a@example.org")


# --- reserved names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RESERVED_LOCAL_PARTS))
def test_every_reserved_name_is_reserved(name: str) -> None:
    assert is_reserved(name)


@pytest.mark.parametrize(
    "name",
    [
        "Postmaster",
        "post.master",
        "post-master",
        "post_master",
        "p.o.s.t.m.a.s.t.e.r",
        "ad_min",
        "a-d-m-i-n",
        "no.reply",
        "no_reply",
        "noreply",
        "mailerdaemon",
        "mailer.daemon",
        "postmaster+x",
        "post.master+anything",
        "ABUSE",
    ],
)
def test_separator_and_sub_address_variants_of_reserved_names_are_reserved(name: str) -> None:
    assert is_reserved(name)


@pytest.mark.parametrize("name", ["alice", "postmasters", "admins", "rooted", "x+postmaster", ""])
def test_ordinary_names_are_not_reserved(name: str) -> None:
    assert not is_reserved(name)


def test_extra_reserved_names_get_the_same_variant_matching() -> None:
    assert is_reserved("sup.port", extra=["support"])
    assert is_reserved("billing", extra=("Bill-ing",))
    assert not is_reserved("alice", extra=["support"])
