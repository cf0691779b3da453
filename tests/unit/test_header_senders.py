"""The From/Sender rules of the submission milter (ddmail_milter.header_senders)."""

from __future__ import annotations

import pytest

from ddmail_milter.header_senders import Refused, claimed_senders


def stored(headers: list[tuple[str, str]]) -> list[str | None]:
    return [own for _, _, own in claimed_senders(headers)]


def refused(headers: list[tuple[str, str]]) -> str:
    with pytest.raises(Refused) as exc:
        claimed_senders(headers)
    assert exc.value.reply.startswith("550 5.7.1 ")
    return exc.value.reply


def test_addresses_are_compared_in_stored_form_case_insensitively_and_idna() -> None:
    assert stored([("From", "Alice <ALICE@Bücher.Example>")]) == ["alice@xn--bcher-kva.example"]


def test_encoded_display_names_and_comments_do_not_change_the_address() -> None:
    value = "=?utf-8?q?Bob_=3Cbob=40other=2Eexample=3E?= <alice@own.example> (bob@other.example)"
    assert stored([("From", value)]) == ["alice@own.example"]


def test_a_period_in_the_display_name_is_accepted() -> None:
    assert stored([("From", "John Q. Public <john@own.example>")]) == ["john@own.example"]


def test_folded_header_is_unfolded() -> None:
    assert stored([("From", "Alice\r\n <alice@own.example>")]) == ["alice@own.example"]


def test_every_address_of_from_and_groups_is_returned() -> None:
    headers = [("From", "a@own.example, team: b@own.example, c@bank.example;")]
    assert [w for _, w, _ in claimed_senders(headers)] == [
        "a@own.example",
        "b@own.example",
        "c@bank.example",
    ]


def test_sender_is_checked_too() -> None:
    result = claimed_senders([("From", "a@own.example"), ("sender", "b@other.example")])
    assert [(n, o) for n, _, o in result] == [
        ("From", "a@own.example"),
        ("Sender", "b@other.example"),
    ]


def test_an_address_that_cannot_be_ours_has_no_stored_form() -> None:
    assert stored([("From", '"bob@x"@own.example')]) == [None]
    assert stored([("From", "bob+tag@own.example")]) == [None]


def test_missing_from_is_refused_with_a_clear_message() -> None:
    assert "no From header" in refused([("Sender", "a@own.example")])


def test_repeated_from_or_sender_is_refused() -> None:
    refused([("From", "a@own.example"), ("From", "b@other.example")])
    refused([("From", "a@own.example"), ("Sender", "a@own.example"), ("Sender", "b@x.org")])


def test_sender_with_two_addresses_is_refused() -> None:
    assert "exactly one" in refused([("From", "a@own.example"), ("Sender", "a@o.example, b@x.org")])


@pytest.mark.parametrize(
    "value",
    [
        "alice@own.example <bob@other.example>",  # Python reads alice, a receiver may show bob
        "Bob <bob@other.example> alice@own.example",
        "a@own.example;b@other.example",
        "=?utf-8?q?bob?=@own.example",  # encoded word inside the address
        "alice",
        "<>",
        "undisclosed-recipients:;",
        "",
        "<@relay.example:alice@own.example>",
        "Alice <alice@own.example",
    ],
)
def test_unreadable_or_addressless_from_is_refused(value: str) -> None:
    refused([("From", value)])


def test_reply_text_is_one_printable_line() -> None:
    reply = refused([("From", "a@own.example\r\n bob\x00")])
    assert reply.isprintable() and "\n" not in reply
