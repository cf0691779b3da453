"""The delivery stage's pure decisions."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ddmail_keyhandler.pgpstage import ascii_sender
from tests.unit.test_openpgp_keys import PgpKeys, make_keys


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


class FakeKeys:
    def __init__(self, key: str | None, broken: bool = False) -> None:
        self.key, self.broken = key, broken
        self.recorded: list[tuple[str, str | None]] = []

    def active_key(self, address: str) -> str | None:
        if self.broken:
            raise OSError("database unreachable")
        return self.key

    def record_delivery(self, address: str, failure: str | None) -> None:
        self.recorded.append((address, failure))


def deliver(stage: object, raw: bytes = b"Subject: s\r\n\r\nsecret body\r\n") -> tuple[str, list]:
    import asyncio

    from aiosmtpd.smtp import Envelope

    from ddmail_keyhandler.pgpstage import _Handler

    stored: list[bytes] = []
    stage.store = lambda sender, rcpt, data, options: stored.append(data) or "250 2.0.0 Stored"  # type: ignore[attr-defined]
    envelope = Envelope()
    envelope.mail_from, envelope.rcpt_tos, envelope.original_content = (
        "a@b.example",
        ["r@d.test"],
        raw,
    )
    answer = asyncio.run(_Handler(stage).handle_DATA(None, None, envelope))  # type: ignore[arg-type]
    return answer, stored


def test_a_failing_gpg_defers_and_stores_nothing() -> None:
    from ddmail_keyhandler.pgpstage import TEMPFAIL_ENCRYPT, Stage

    keys = FakeKeys("-----BEGIN PGP PUBLIC KEY BLOCK-----\nbroken\n")
    answer, stored = deliver(Stage(keys, Path("/nonexistent"), gnupg_binary="/bin/false"))  # type: ignore[arg-type]
    assert answer == TEMPFAIL_ENCRYPT and answer.startswith("451")
    assert stored == []
    assert keys.recorded and keys.recorded[0][1]


def test_an_unreadable_key_store_defers_and_stores_nothing() -> None:
    from ddmail_keyhandler.pgpstage import TEMPFAIL_KEYS, Stage

    answer, stored = deliver(Stage(FakeKeys(None, broken=True), Path("/x")))  # type: ignore[arg-type]
    assert answer == TEMPFAIL_KEYS and stored == []


def test_a_recipient_without_a_key_gets_the_message_unchanged() -> None:
    from ddmail_keyhandler.pgpstage import Stage

    raw = b"Subject: s\r\n\r\n\xe9t\xe9 8-bit\r\n"
    answer, stored = deliver(Stage(FakeKeys(None), Path("/x")), raw)  # type: ignore[arg-type]
    assert answer.startswith("250") and stored == [raw]


def test_dovecot_unreachable_defers() -> None:
    from ddmail_keyhandler.pgpstage import TEMPFAIL_STORE, Stage

    stage = Stage(FakeKeys(None), Path("/nonexistent/lmtp"))  # type: ignore[arg-type]
    import asyncio

    from aiosmtpd.smtp import Envelope

    from ddmail_keyhandler.pgpstage import _Handler

    envelope = Envelope()
    envelope.mail_from, envelope.rcpt_tos, envelope.original_content = "", ["r@d.test"], b"x\r\n"
    answer = asyncio.run(_Handler(stage).handle_DATA(None, None, envelope))  # type: ignore[arg-type]
    assert answer == TEMPFAIL_STORE


@pytest.fixture(scope="module")
def keys() -> Iterator[PgpKeys]:
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        yield make_keys(Path(home))


def recipient_key_ids(armored: bytes) -> list[str]:
    """The key ids a PGP message is encrypted to (its public-key encrypted session keys), read
    by gpg in an empty home (no secret key needed to list them)."""
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        listed = subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--list-packets"],
            input=armored,
            capture_output=True,
            check=False,
            timeout=60,
        )
    return re.findall(r":pubkey enc packet: .*keyid ([0-9A-F]{16})", listed.stdout.decode())


def test_delivery_encrypts_only_to_the_strong_subkey_never_a_newer_weak_one(
    keys: PgpKeys,
) -> None:
    from ddmail_keyhandler.pgpstage import Stage

    stage = Stage(FakeKeys(keys.mixed), Path("/x"))  # type: ignore[arg-type]
    answer, stored = deliver(stage)
    assert answer.startswith("250") and len(stored) == 1
    armored = stored[0][stored[0].index(b"-----BEGIN PGP MESSAGE-----") :]
    assert recipient_key_ids(armored) == [keys.mixed_strong]
    # gpg left to itself would have chosen the newer, weak RSA-1024 subkey.
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        gpg = ["gpg", "--homedir", home, "--batch", "--quiet", "--trust-model", "always"]
        subprocess.run([*gpg, "--import"], input=keys.mixed.encode(), check=True)
        own = subprocess.run(
            [*gpg, "--armor", "--encrypt", "-r", keys.mixed_fpr],
            input=b"x",
            capture_output=True,
            check=True,
        ).stdout
    assert recipient_key_ids(own) == [keys.mixed_weak]
