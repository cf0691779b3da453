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
