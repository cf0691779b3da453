"""The delivery stage's pure decisions."""

from __future__ import annotations

import pytest

from ddmail_keyhandler.pgpstage import ascii_sender


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("", ""),
        ("a@example.org", "a@example.org"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("bücher@bücher.example", ""),  # a non-ASCII local part cannot travel without SMTPUTF8
        ("x@bad..domain", "x@bad..domain"),  # ASCII stays as it is
    ],
)
def test_envelope_sender_is_made_ascii_for_dovecot(sender: str, expected: str) -> None:
    assert ascii_sender(sender) == expected


def test_wkd_hash_matches_the_specification_example() -> None:
    from ddmail_keyhandler.wkd import wkd_hash

    # draft-koch-openpgp-webkey-service: "Joe.Doe" → iy9q119eutrkn8s1mk4r39qejnbu3n5q
    assert wkd_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
